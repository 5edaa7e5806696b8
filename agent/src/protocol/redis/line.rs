//! A RESP line (`+OK\r\n`, `$5\r\n`, an inline command) read across chunk
//! boundaries, keeping only its first bytes.

/// One line being read: its first `keep` bytes are kept, the rest only
/// counted, so a line of any length costs at most `keep` bytes.
#[derive(Debug, Default)]
pub(super) struct Line {
    buf: Vec<u8>,
    keep: usize,
    seen: u64,
}

impl Line {
    /// Starts a new line keeping at most `keep` bytes (its `\r` included).
    pub(super) fn start(&mut self, keep: usize) {
        self.buf.clear();
        self.keep = keep;
        self.seen = 0;
    }

    /// Reads from `data` up to the end of the line: returns the bytes used
    /// and whether the line ended (its `\n` is used, not kept).
    pub(super) fn feed(&mut self, data: &[u8]) -> (usize, bool) {
        let (segment, ended) = match data.iter().position(|&b| b == b'\n') {
            Some(at) => (data.get(..at).unwrap_or(data), true),
            None => (data, false),
        };
        let room = self.keep.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(segment.get(..room).unwrap_or(segment));
        self.seen = self.seen.saturating_add(segment.len() as u64);
        (segment.len() + usize::from(ended), ended)
    }

    /// Whether every byte of the line was kept.
    pub(super) fn whole(&self) -> bool {
        self.seen <= self.buf.len() as u64
    }

    /// Bytes of the line seen so far.
    pub(super) fn seen(&self) -> u64 {
        self.seen
    }

    /// The kept bytes, without the `\r` ending a whole line.
    pub(super) fn text(&self) -> &[u8] {
        if self.whole() { self.buf.strip_suffix(b"\r").unwrap_or(&self.buf) } else { &self.buf }
    }

    /// Forgets the kept bytes (an inline `AUTH` line holds a password).
    pub(super) fn wipe(&mut self) {
        self.buf.clear();
        self.seen = 0;
    }
}

/// A RESP integer (`-1`, `42`): optional minus, 1 to 19 digits, in range.
pub(super) fn parse_int(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let value = digits.iter().try_fold(0i64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(i64::from(digit))
    })?;
    Some(if negative { -value } else { value })
}
