//! Length-prefixed framing of one direction: every message after the
//! startup phase is `type: u8, len: i32 BE (counting itself), body`, and
//! the startup-phase messages are the same without the type byte.
//!
//! Only a bounded prefix of a message body is ever kept (and only for the
//! types the session reads); the rest is counted past, so a 1 GiB `DataRow`
//! costs nothing and a capture gap inside a message of known length is
//! skipped exactly.

use crate::protocol::http1::Ts;

/// Most body bytes kept of one message (SQL text longer than this is
/// summarised from its prefix).
pub(super) const MAX_KEPT: u32 = 32 * 1024;

/// A kept-body buffer grown past this is freed after use, so idle
/// connections hold no large buffers.
const SHRINK_ABOVE: usize = 4 * 1024;

/// Which peer sends the stream; decides which types and lengths are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Frontend,
    Backend,
}

/// One framed message, delivered once its last byte went by (or was
/// covered by a gap).
#[derive(Debug)]
pub(super) struct Message<'a> {
    /// Type byte; 0 for the untyped startup-phase messages.
    pub tag: u8,
    /// The kept prefix of the body: empty for types the session does not
    /// read, whole for small ones.
    pub body: &'a [u8],
    /// A gap hid part of what would have been kept.
    pub cut: bool,
    /// Syscall carrying the message's first byte.
    pub first: Ts,
    /// Syscall carrying its last byte.
    pub last: Ts,
}

/// What one call to [`Framer::next`] found.
#[derive(Debug)]
pub(super) enum Step<'a> {
    Message(Message<'a>),
    /// Every byte was used; the message goes on in a later chunk.
    NeedMore,
    /// The bytes at the current position start no valid message.
    Invalid,
}

/// What a capture gap did to the framing.
#[derive(Debug)]
pub(super) enum GapStep<'a> {
    /// The gap fell inside a message whose end is still to come.
    Absorbed,
    /// The gap ended a message; `lost` says it also ran past it, into
    /// messages whose lengths are unknown.
    Message { msg: Message<'a>, lost: bool },
    /// The gap covered message boundaries: framing is lost.
    Lost,
}

#[derive(Debug)]
struct Current {
    tag: u8,
    len: u32,
    /// Body bytes gone by (captured or not).
    seen: u32,
    /// Body bytes to keep.
    keep: u32,
    cut: bool,
    first: Ts,
}

/// Framing state of one direction.
#[derive(Debug)]
pub(super) struct Framer {
    side: Side,
    /// Messages carry a type byte (false only for a client's startup phase).
    typed: bool,
    hdr: [u8; 5],
    hdr_len: usize,
    hdr_first: Ts,
    cur: Option<Current>,
    buf: Vec<u8>,
}

impl Framer {
    pub(super) fn new(side: Side, typed: bool) -> Self {
        Self { side, typed, hdr: [0; 5], hdr_len: 0, hdr_first: Ts::default(), cur: None, buf: Vec::new() }
    }

    pub(super) fn set_typed(&mut self, typed: bool) {
        self.typed = typed;
    }

    /// Forgets any partial message (after lost framing).
    pub(super) fn reset(&mut self) {
        self.hdr_len = 0;
        self.cur = None;
        self.release();
    }

    /// Heap bytes held (bounded by `MAX_KEPT`).
    #[cfg(test)]
    pub(super) fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    fn release(&mut self) {
        if self.buf.capacity() > SHRINK_ABOVE {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    /// Reads from `data`; returns the bytes used and what they made.
    pub(super) fn next<'a>(&'a mut self, data: &'a [u8], ts: Ts) -> (usize, Step<'a>) {
        let mut used = 0;
        if self.cur.is_none() {
            let need = if self.typed { 5 } else { 4 };
            let header: [u8; 5];
            if self.hdr_len == 0 && data.len() >= need {
                header = head5(data);
                used = need;
                self.hdr_first = ts;
            } else {
                if self.hdr_len == 0 {
                    self.hdr_first = ts;
                }
                let take = need.saturating_sub(self.hdr_len).min(data.len());
                if let (Some(dst), Some(src)) = (self.hdr.get_mut(self.hdr_len..self.hdr_len + take), data.get(..take))
                {
                    dst.copy_from_slice(src);
                }
                self.hdr_len += take;
                used = take;
                if self.hdr_len < need {
                    return (used, Step::NeedMore);
                }
                header = self.hdr;
                self.hdr_len = 0;
            }
            let (tag, raw_len) = if self.typed {
                (header[0], u32::from_be_bytes([header[1], header[2], header[3], header[4]]))
            } else {
                (0, u32::from_be_bytes([header[0], header[1], header[2], header[3]]))
            };
            let Some(len) = raw_len.checked_sub(4).filter(|&l| valid_len(self.side, tag, l)) else {
                return (0, Step::Invalid);
            };
            self.release();
            let keep = kept_len(self.side, tag, len);
            self.cur = Some(Current { tag, len, seen: 0, keep, cut: false, first: self.hdr_first });
        }
        let rest = data.get(used..).unwrap_or_default();
        let Some(cur) = self.cur.as_mut() else {
            return (used, Step::NeedMore);
        };
        let remaining = cur.len - cur.seen;
        let take = remaining.min(u32::try_from(rest.len()).unwrap_or(u32::MAX));
        let taken = rest.get(..take as usize).unwrap_or_default();
        used += taken.len();
        let whole_here = cur.seen == 0 && take == remaining;
        if !whole_here {
            // The part of this piece that falls inside the kept prefix.
            let want = cur.keep.saturating_sub(cur.seen).min(take) as usize;
            self.buf.extend_from_slice(taken.get(..want).unwrap_or_default());
        }
        cur.seen += take;
        if cur.seen < cur.len {
            return (used, Step::NeedMore);
        }
        let Some(cur) = self.cur.take() else {
            return (used, Step::NeedMore);
        };
        let body = if whole_here { taken.get(..cur.keep as usize).unwrap_or(taken) } else { &self.buf[..] };
        let msg = Message { tag: cur.tag, body, cut: cur.cut, first: cur.first, last: ts };
        (used, Step::Message(msg))
    }

    /// `n` bytes the capture missed right after the last chunk.
    pub(super) fn gap(&mut self, n: u64, ts: Ts) -> GapStep<'_> {
        if n == 0 {
            return GapStep::Absorbed;
        }
        let Some(cur) = self.cur.as_mut() else {
            self.reset();
            return GapStep::Lost;
        };
        let remaining = u64::from(cur.len - cur.seen);
        if cur.seen < cur.keep {
            cur.cut = true;
        }
        if n < remaining {
            // Lossless: `n < remaining <= u32::MAX`.
            cur.seen += n as u32;
            return GapStep::Absorbed;
        }
        let lost = n > remaining;
        let Some(cur) = self.cur.take() else {
            return GapStep::Lost;
        };
        let msg = Message { tag: cur.tag, body: &self.buf[..], cut: cur.cut, first: cur.first, last: ts };
        GapStep::Message { msg, lost }
    }
}

fn head5(data: &[u8]) -> [u8; 5] {
    let mut h = [0u8; 5];
    for (d, s) in h.iter_mut().zip(data) {
        *d = *s;
    }
    h
}

/// Largest body of the messages that may carry bulk data (the server's own
/// limit is 1 GiB).
const BIG: u32 = 0x3fff_ffff;
/// Bodies that carry only names and small numbers.
const SMALL: u32 = 64 * 1024;

/// Body length bounds of each message type: `None` for unknown types.
fn len_bounds(side: Side, tag: u8) -> Option<(u32, u32)> {
    Some(match (side, tag) {
        // Startup, SSL/GSS/cancel requests: the server caps the packet at 10000.
        (Side::Frontend, 0) => (4, 9996),
        (Side::Frontend, b'Q') => (1, BIG),
        (Side::Frontend, b'P') => (4, BIG),
        (Side::Frontend, b'B') => (8, BIG),
        (Side::Frontend, b'F') => (10, BIG),
        (Side::Frontend, b'd' | b'p') => (0, BIG),
        (Side::Frontend, b'C' | b'D') => (2, SMALL),
        (Side::Frontend, b'E') => (5, SMALL),
        (Side::Frontend, b'f') => (1, SMALL),
        (Side::Frontend, b'H' | b'S' | b'c' | b'X') => (0, 0),
        (Side::Backend, b'R') => (4, SMALL),
        (Side::Backend, b'K') => (8, 264),
        (Side::Backend, b'1' | b'2' | b'3' | b'n' | b's' | b'I' | b'c') => (0, 0),
        (Side::Backend, b'Z') => (1, 1),
        (Side::Backend, b'C') => (1, 1024),
        (Side::Backend, b'd') => (0, BIG),
        (Side::Backend, b'D') => (2, BIG),
        (Side::Backend, b'V') => (4, BIG),
        (Side::Backend, b'G' | b'H' | b'W') => (3, SMALL),
        (Side::Backend, b'E' | b'N') => (1, 16 << 20),
        (Side::Backend, b'v') => (8, SMALL),
        (Side::Backend, b'A') => (6, SMALL),
        (Side::Backend, b't') => (2, 2 + 4 * 65535),
        (Side::Backend, b'S') => (2, SMALL),
        (Side::Backend, b'T') => (2, 1 << 20),
        _ => return None,
    })
}

/// Whether `tag` is a message type `side` sends.
pub(super) fn known_type(side: Side, tag: u8) -> bool {
    tag != 0 && len_bounds(side, tag).is_some()
}

/// Whether a body of `len` bytes fits a message of type `tag`.
pub(super) fn valid_len(side: Side, tag: u8, len: u32) -> bool {
    len_bounds(side, tag).is_some_and(|(lo, hi)| (lo..=hi).contains(&len))
}

/// Body bytes the session reads. Passwords (`p`), row and copy data are
/// never kept.
fn kept_len(side: Side, tag: u8, len: u32) -> u32 {
    let want = match (side, tag) {
        (Side::Frontend, 0 | b'Q' | b'P') => MAX_KEPT,
        // Portal and statement names; parameter values are never read.
        (Side::Frontend, b'B') => 256,
        (Side::Frontend, b'C' | b'D' | b'E') => 1024,
        (Side::Backend, b'C' | b'Z') => 1024,
        (Side::Backend, b'E') => 4096,
        _ => 0,
    };
    want.min(len)
}
