//! Message bodies are skipped, never stored: this only tracks where a body
//! ends and how many (decoded) bytes it had.

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyKind {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Result of feeding captured body bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Feed {
    /// Everything was body; more is expected.
    NeedMore,
    /// The body ended after `consumed` bytes of the data.
    Done { consumed: usize },
    /// Chunked framing was malformed: where the body ends is unknown.
    Invalid,
}

/// Result of a capture gap of known length inside a body.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Gap {
    /// The gap was all body; more is expected.
    Absorbed,
    /// The body ended inside (or right at the end of) the gap; `spill`
    /// bytes of the gap belong to whatever follows.
    Done { spill: u64 },
    /// The gap covered framing bytes: where the body ends is unknown.
    Lost,
}

/// Skips one body.
#[derive(Debug)]
pub(super) struct BodyReader {
    state: State,
    /// Body bytes so far (decoded: chunk framing is not counted).
    size: u64,
}

#[derive(Debug)]
enum State {
    Length { remaining: u64 },
    Chunked(Chunked),
    UntilClose,
}

/// Chunked decoder states (RFC 9112 §7.1). Bare LF is accepted where CRLF
/// is expected, as real parsers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Reading the hex chunk size; `digits` once at least one was seen.
    Size {
        value: u64,
        digits: bool,
    },
    /// Skipping extensions (or whitespace / CR) up to the size line's LF.
    SizeLineRest {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    /// Expecting the CRLF after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line or of the final blank line.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    Done,
}

const NEW_SIZE: Chunked = Chunked::Size { value: 0, digits: false };

impl BodyReader {
    /// A reader for a body of `kind`; `None` when there is no body.
    pub fn new(kind: BodyKind) -> Option<Self> {
        let state = match kind {
            BodyKind::None | BodyKind::Length(0) => return None,
            BodyKind::Length(n) => State::Length { remaining: n },
            BodyKind::Chunked => State::Chunked(NEW_SIZE),
            BodyKind::UntilClose => State::UntilClose,
        };
        Some(Self { state, size: 0 })
    }

    /// Body bytes so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether only the connection's end delimits the body.
    pub fn until_close(&self) -> bool {
        matches!(self.state, State::UntilClose)
    }

    /// Consumes body bytes from the start of `data`.
    pub fn feed(&mut self, data: &[u8]) -> Feed {
        match &mut self.state {
            State::Length { remaining } => {
                let take = take_up_to(*remaining, data.len());
                *remaining -= take as u64;
                self.size = self.size.saturating_add(take as u64);
                if *remaining == 0 { Feed::Done { consumed: take } } else { Feed::NeedMore }
            }
            State::UntilClose => {
                self.size = self.size.saturating_add(data.len() as u64);
                Feed::NeedMore
            }
            State::Chunked(c) => feed_chunked(c, &mut self.size, data),
        }
    }

    /// Accounts for `n` uncaptured bytes.
    pub fn gap(&mut self, n: u64) -> Gap {
        match &mut self.state {
            State::Length { remaining } => {
                let take = (*remaining).min(n);
                *remaining -= take;
                self.size = self.size.saturating_add(take);
                if *remaining == 0 { Gap::Done { spill: n - take } } else { Gap::Absorbed }
            }
            State::UntilClose => {
                self.size = self.size.saturating_add(n);
                Gap::Absorbed
            }
            State::Chunked(Chunked::Data { remaining }) if n <= *remaining => {
                *remaining -= n;
                self.size = self.size.saturating_add(n);
                if *remaining == 0 {
                    self.state = State::Chunked(Chunked::DataCr);
                }
                Gap::Absorbed
            }
            State::Chunked(_) => Gap::Lost,
        }
    }
}

fn feed_chunked(c: &mut Chunked, size: &mut u64, data: &[u8]) -> Feed {
    let mut i = 0;
    while i < data.len() {
        match *c {
            Chunked::Data { remaining } => {
                let take = take_up_to(remaining, data.len() - i);
                *size = size.saturating_add(take as u64);
                i += take;
                let remaining = remaining - take as u64;
                *c = if remaining == 0 { Chunked::DataCr } else { Chunked::Data { remaining } };
            }
            Chunked::SizeLineRest { value } => match find_lf(&data[i..]) {
                // Extensions are skipped wholesale: nothing in them matters here.
                Some(p) => {
                    i += p + 1;
                    *c = after_size(value);
                }
                None => i = data.len(),
            },
            Chunked::TrailerLine => match find_lf(&data[i..]) {
                Some(p) => {
                    i += p + 1;
                    *c = Chunked::TrailerStart;
                }
                None => i = data.len(),
            },
            state => {
                let Some(next) = step(state, data[i]) else {
                    return Feed::Invalid;
                };
                i += 1;
                *c = next;
                if next == Chunked::Done {
                    return Feed::Done { consumed: i };
                }
            }
        }
    }
    Feed::NeedMore
}

/// `min(remaining, available)` without a lossy cast on 32-bit targets.
fn take_up_to(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

fn find_lf(data: &[u8]) -> Option<usize> {
    data.iter().position(|&b| b == b'\n')
}

fn after_size(value: u64) -> Chunked {
    if value == 0 { Chunked::TrailerStart } else { Chunked::Data { remaining: value } }
}

/// One framing byte; `None` when it cannot appear there.
fn step(state: Chunked, b: u8) -> Option<Chunked> {
    Some(match (state, b) {
        (Chunked::Size { value, .. }, _) if b.is_ascii_hexdigit() => {
            let digit = char::from(b).to_digit(16)?;
            let value = value.checked_mul(16)?.checked_add(u64::from(digit))?;
            Chunked::Size { value, digits: true }
        }
        (Chunked::Size { value, digits: true }, b' ' | b'\t' | b';' | b'\r') => Chunked::SizeLineRest { value },
        (Chunked::Size { value, digits: true }, b'\n') => after_size(value),
        (Chunked::DataCr, b'\r') => Chunked::DataLf,
        (Chunked::DataCr | Chunked::DataLf, b'\n') => NEW_SIZE,
        (Chunked::TrailerStart, b'\r') => Chunked::TrailerLf,
        (Chunked::TrailerStart | Chunked::TrailerLf, b'\n') => Chunked::Done,
        (Chunked::TrailerStart, _) => Chunked::TrailerLine,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `data` in pieces of `step` bytes; returns (total consumed, outcome).
    fn feed_split(kind: BodyKind, data: &[u8], piece: usize) -> (usize, Feed, u64) {
        let mut r = BodyReader::new(kind).expect("has body");
        let mut used = 0;
        for part in data.chunks(piece) {
            match r.feed(part) {
                Feed::NeedMore => used += part.len(),
                Feed::Done { consumed } => {
                    return (used + consumed, Feed::Done { consumed }, r.size());
                }
                Feed::Invalid => return (used, Feed::Invalid, r.size()),
            }
        }
        (used, Feed::NeedMore, r.size())
    }

    #[test]
    fn no_body_kinds() {
        assert!(BodyReader::new(BodyKind::None).is_none());
        assert!(BodyReader::new(BodyKind::Length(0)).is_none());
    }

    #[test]
    fn length_body() {
        let mut r = BodyReader::new(BodyKind::Length(5)).expect("body");
        assert_eq!(r.feed(b"abc"), Feed::NeedMore);
        assert_eq!(r.feed(b"deXYZ"), Feed::Done { consumed: 2 });
        assert_eq!(r.size(), 5);
    }

    #[test]
    fn length_gaps() {
        let mut r = BodyReader::new(BodyKind::Length(10)).expect("body");
        assert_eq!(r.gap(4), Gap::Absorbed);
        assert_eq!(r.gap(6), Gap::Done { spill: 0 });
        let mut r = BodyReader::new(BodyKind::Length(10)).expect("body");
        assert_eq!(r.gap(13), Gap::Done { spill: 3 });
        assert_eq!(r.size(), 10);
    }

    #[test]
    fn huge_length_never_overflows() {
        let mut r = BodyReader::new(BodyKind::Length(u64::MAX)).expect("body");
        assert_eq!(r.gap(u64::MAX - 1), Gap::Absorbed);
        assert_eq!(r.feed(b"xy"), Feed::Done { consumed: 1 });
        assert_eq!(r.size(), u64::MAX);
        let mut r = BodyReader::new(BodyKind::UntilClose).expect("body");
        assert_eq!(r.gap(u64::MAX), Gap::Absorbed);
        assert_eq!(r.feed(b"more"), Feed::NeedMore);
        assert_eq!(r.size(), u64::MAX);
    }

    const CHUNKED: &[u8] =
        b"4;ext=\"x\"\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\nNEXT";

    #[test]
    fn chunked_every_split() {
        let end = CHUNKED.len() - 4;
        for piece in 1..=CHUNKED.len() {
            let (used, out, size) = feed_split(BodyKind::Chunked, CHUNKED, piece);
            assert!(matches!(out, Feed::Done { .. }), "piece {piece}: {out:?}");
            assert_eq!(used, end, "piece {piece}");
            assert_eq!(size, 23, "piece {piece}");
        }
        // Every split point into two pieces, too.
        for cut in 0..=CHUNKED.len() {
            let mut r = BodyReader::new(BodyKind::Chunked).expect("body");
            let (a, b) = CHUNKED.split_at(cut);
            let total = match r.feed(a) {
                Feed::Done { consumed } => consumed,
                Feed::NeedMore => match r.feed(b) {
                    Feed::Done { consumed } => a.len() + consumed,
                    other => panic!("cut {cut}: {other:?}"),
                },
                Feed::Invalid => panic!("cut {cut}: invalid"),
            };
            assert_eq!(total, end, "cut {cut}");
        }
    }

    #[test]
    fn chunked_bare_lf_and_no_trailer() {
        let (used, out, size) = feed_split(BodyKind::Chunked, b"3\nabc\n0\n\nX", 100);
        assert_eq!((used, out, size), (9, Feed::Done { consumed: 9 }, 3));
    }

    #[test]
    fn chunked_invalid() {
        for bad in [&b"zz\r\n"[..], b"\r\n", b"3\r\nabcX", b"0\r\n\rX", b"11111111111111111\r\n"] {
            let (_, out, _) = feed_split(BodyKind::Chunked, bad, 100);
            assert_eq!(out, Feed::Invalid, "{bad:?}");
        }
        // 16 hex digits still fit in u64.
        let (_, out, _) = feed_split(BodyKind::Chunked, b"ffffffffffffffff\r\nab", 100);
        assert_eq!(out, Feed::NeedMore);
    }

    #[test]
    fn chunked_gaps() {
        let mut r = BodyReader::new(BodyKind::Chunked).expect("body");
        assert_eq!(r.feed(b"a\r\n01"), Feed::NeedMore);
        assert_eq!(r.gap(8), Gap::Absorbed);
        assert_eq!(r.feed(b"\r\n0\r\n\r\n"), Feed::Done { consumed: 7 });
        assert_eq!(r.size(), 10);
        let mut r = BodyReader::new(BodyKind::Chunked).expect("body");
        assert_eq!(r.feed(b"a\r\n01"), Feed::NeedMore);
        assert_eq!(r.gap(9), Gap::Lost);
        let mut r = BodyReader::new(BodyKind::Chunked).expect("body");
        assert_eq!(r.feed(b"a"), Feed::NeedMore);
        assert_eq!(r.gap(1), Gap::Lost);
    }
}
