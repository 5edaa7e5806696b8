//! Buffering of header blocks that arrive over several syscalls: the only
//! bytes the parser ever stores, bounded per direction.

use super::Ts;
use super::head::Parsed;

/// What feeding bytes to a [`HeadBuf`] produced.
#[derive(Debug)]
pub(super) enum HeadStep<T> {
    /// A head ended `consumed` bytes into the data; it began in syscall `first`.
    Complete { consumed: usize, head: T, first: Ts },
    /// All data was buffered (or was blank lines between messages).
    NeedMore,
    /// The head outgrew the bound; the buffered part is left for `take_cut`.
    TooLarge,
    /// Not a valid head; the buffer was dropped.
    Invalid,
}

/// Accumulates one header block that arrives over several syscalls. Heads
/// contained in a single chunk are parsed in place, never copied.
#[derive(Debug, Default)]
pub(super) struct HeadBuf {
    buf: Vec<u8>,
    /// Where to resume looking for the blank line that ends the head, so a
    /// head trickling in is scanned once instead of re-parsed per chunk.
    scanned: usize,
    /// httparse accepted the buffered start line, so garbage can no longer
    /// show up before the head's end.
    start_ok: bool,
    first: Option<Ts>,
}

impl HeadBuf {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether a head has started (bytes buffered).
    pub fn is_started(&self) -> bool {
        self.first.is_some()
    }

    pub fn clear(&mut self) {
        // Keep a small buffer for reuse; drop a big one so idle sessions stay small.
        if self.buf.capacity() > 4096 {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.scanned = 0;
        self.start_ok = false;
        self.first = None;
    }

    /// Feeds bytes that continue (or start) a head.
    pub fn feed<T>(&mut self, data: &[u8], ts: Ts, max: usize, parse: fn(&[u8]) -> Parsed<T>) -> HeadStep<T> {
        if self.first.is_none() {
            return self.feed_fresh(data, ts, max, parse);
        }
        match self.feed_more(data, max, parse) {
            // The buffered start was junk; this syscall may still begin a message.
            HeadStep::Invalid => self.feed_fresh(data, ts, max, parse),
            other => other,
        }
    }

    fn feed_fresh<T>(&mut self, data: &[u8], ts: Ts, max: usize, parse: fn(&[u8]) -> Parsed<T>) -> HeadStep<T> {
        // Blank lines between messages are legal noise (RFC 9112 §2.2);
        // skipping them keeps `first` on the syscall with the real head.
        let skip = data.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        let rest = &data[skip..];
        if rest.is_empty() {
            return HeadStep::NeedMore;
        }
        match parse(rest) {
            Parsed::Complete { len, head } => HeadStep::Complete { consumed: skip + len, head, first: ts },
            Parsed::Invalid => HeadStep::Invalid,
            Parsed::Partial => {
                self.first = Some(ts);
                self.append(rest, max);
                self.scanned = 0;
                self.start_ok = rest.contains(&b'\n');
                if rest.len() >= max { HeadStep::TooLarge } else { HeadStep::NeedMore }
            }
            Parsed::TooManyHeaders => {
                // Keep the start so `take_cut` can still report the first lines.
                self.first = Some(ts);
                self.append(rest, max);
                HeadStep::TooLarge
            }
        }
    }

    fn feed_more<T>(&mut self, data: &[u8], max: usize, parse: fn(&[u8]) -> Parsed<T>) -> HeadStep<T> {
        let old = self.buf.len();
        let taken = self.append(data, max);
        let Some(end) = find_head_end(&self.buf, self.scanned) else {
            self.scanned = self.buf.len().saturating_sub(2);
            if self.start_invalid(&data[..taken], parse) {
                self.clear();
                return HeadStep::Invalid;
            }
            return if self.buf.len() >= max { HeadStep::TooLarge } else { HeadStep::NeedMore };
        };
        match parse(&self.buf[..end]) {
            Parsed::Complete { len, head } => {
                let first = self.first.unwrap_or_default();
                // The end lies in the new bytes, else an earlier scan would have found it.
                let consumed = len.checked_sub(old).filter(|&c| c > 0 && c <= taken);
                self.clear();
                match consumed {
                    Some(consumed) => HeadStep::Complete { consumed, head, first },
                    None => HeadStep::Invalid,
                }
            }
            Parsed::Partial => {
                self.scanned = end;
                if self.buf.len() >= max { HeadStep::TooLarge } else { HeadStep::NeedMore }
            }
            Parsed::TooManyHeaders => HeadStep::TooLarge,
            Parsed::Invalid => {
                self.clear();
                HeadStep::Invalid
            }
        }
    }

    /// Re-checks a start line that is still arriving, so garbage is caught
    /// early rather than after buffering up to the bound. Only short buffers
    /// and new line ends trigger a parse, keeping trickled heads linear.
    fn start_invalid<T>(&mut self, new: &[u8], parse: fn(&[u8]) -> Parsed<T>) -> bool {
        if self.start_ok || (self.buf.len() > 64 && !new.contains(&b'\n')) {
            return false;
        }
        match parse(&self.buf) {
            Parsed::Invalid => true,
            _ => {
                self.start_ok = self.buf.contains(&b'\n');
                false
            }
        }
    }

    /// Appends up to `max` buffered bytes in total; returns how many were taken.
    fn append(&mut self, data: &[u8], max: usize) -> usize {
        let take = data.len().min(max.saturating_sub(self.buf.len()));
        let need = self.buf.len() + take;
        if need > self.buf.capacity() {
            // Doubling, but never past the bound, so capacity stays <= max.
            let target = need.max(self.buf.capacity() * 2).min(max).max(need);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(&data[..take]);
        take
    }

    /// Takes the buffered (cut) head, parsed as far as its complete lines go.
    pub fn take_cut<T>(&mut self, cut: fn(&[u8]) -> Option<T>) -> Option<(T, Ts)> {
        let first = self.first?;
        let head = cut(&self.buf);
        self.clear();
        Some((head?, first))
    }

    /// Syscall where the buffered head began.
    pub fn first(&self) -> Option<Ts> {
        self.first
    }
}

/// End (exclusive) of the blank line that closes a head, searching line
/// ends from `from`. Accepts bare LF like httparse does.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(pos) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let nl = i + pos;
        match buf.get(nl + 1..nl + 3) {
            Some([b'\n', _] | [b'\r', b'\n']) => {
                return Some(if buf[nl + 1] == b'\n' { nl + 2 } else { nl + 3 });
            }
            None if buf.get(nl + 1) == Some(&b'\n') => return Some(nl + 2),
            _ => i = nl + 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::head::{cut_request, parse_request};
    use super::*;

    #[test]
    fn head_end_detection() {
        assert_eq!(find_head_end(b"a\r\n\r\nrest", 0), Some(5));
        assert_eq!(find_head_end(b"a\n\nrest", 0), Some(3));
        assert_eq!(find_head_end(b"a\n\r\nrest", 0), Some(4));
        assert_eq!(find_head_end(b"a\r\nb\r\n", 0), None);
        assert_eq!(find_head_end(b"a\r\n\r", 0), None);
        assert_eq!(find_head_end(b"a\n\n", 0), Some(3));
    }

    #[test]
    fn headbuf_buffers_only_split_heads() {
        let ts = Ts { enter_ns: 1, exit_ns: 2 };
        let mut hb = HeadBuf::default();
        let whole = b"GET / HTTP/1.1\r\n\r\nGET";
        match hb.feed(whole, ts, 1024, parse_request) {
            HeadStep::Complete { consumed, .. } => assert_eq!(consumed, 18),
            other => panic!("{other:?}"),
        }
        assert_eq!(hb.capacity(), 0);
        assert!(matches!(hb.feed(b"\r\nGET / HTTP/1.1\r", ts, 1024, parse_request), HeadStep::NeedMore));
        let late = Ts { enter_ns: 5, exit_ns: 6 };
        match hb.feed(b"\n\r\nbody", late, 1024, parse_request) {
            HeadStep::Complete { consumed, first, .. } => {
                assert_eq!(consumed, 3);
                assert_eq!(first, ts);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(hb.len(), 0);
    }

    #[test]
    fn headbuf_rejects_junk_before_the_head_ends() {
        let ts = Ts::default();
        let mut hb = HeadBuf::default();
        assert!(matches!(hb.feed(b"GE", ts, 1024, parse_request), HeadStep::NeedMore));
        assert!(matches!(hb.feed(b"T /\x01 junk", ts, 1024, parse_request), HeadStep::Invalid));
        assert_eq!(hb.len(), 0);
        // A valid start line is checked once; later lines wait for the end.
        assert!(matches!(hb.feed(b"GET / HTTP/1.1\r\nA: b", ts, 1024, parse_request), HeadStep::NeedMore));
        assert!(hb.start_ok);
        // A new syscall that starts a message replaces a junk buffer.
        let mut hb = HeadBuf::default();
        assert!(matches!(hb.feed(b"GET /a HTTP/1.1\r\nA: ", ts, 1024, parse_request), HeadStep::NeedMore));
        assert!(matches!(hb.feed(b"\0junk", ts, 1024, parse_request), HeadStep::NeedMore));
        match hb.feed(b"GET /b HTTP/1.1\r\n\r\n", ts, 1024, parse_request) {
            HeadStep::Complete { head, consumed, .. } => {
                assert_eq!((head.target.as_str(), consumed), ("/b", 19))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn headbuf_bounded() {
        let ts = Ts::default();
        let mut hb = HeadBuf::default();
        assert!(matches!(hb.feed(b"GET / HTTP/1.1\r\nA: ", ts, 64, parse_request), HeadStep::NeedMore));
        let mut step = HeadStep::NeedMore;
        for _ in 0..100 {
            step = hb.feed(b"xxxx", ts, 64, parse_request);
            assert!(hb.capacity() <= 64);
            if matches!(step, HeadStep::TooLarge) {
                break;
            }
        }
        assert!(matches!(step, HeadStep::TooLarge));
        let (head, _) = hb.take_cut(cut_request).expect("request line seen");
        assert_eq!(head.target, "/");
        assert!(!head.complete);
    }
}
