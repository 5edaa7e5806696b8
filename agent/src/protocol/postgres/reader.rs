//! A cursor over a message body: every read checks its bounds, so a
//! malformed or cut body gives `None`, never a panic.

use super::probe::looks_like_text;

/// Bounds-checked reads from a message body.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    pub(super) fn done(&self) -> bool {
        self.rest.is_empty()
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    pub(super) fn i16(&mut self) -> Option<i16> {
        let (b, rest) = self.rest.split_first_chunk::<2>()?;
        self.rest = rest;
        Some(i16::from_be_bytes(*b))
    }

    pub(super) fn i32(&mut self) -> Option<i32> {
        let (b, rest) = self.rest.split_first_chunk::<4>()?;
        self.rest = rest;
        Some(i32::from_be_bytes(*b))
    }

    pub(super) fn skip(&mut self, n: usize) -> Option<()> {
        self.rest = self.rest.get(n..)?;
        Some(())
    }

    /// A NUL-terminated string, without its NUL; `None` if no NUL follows.
    pub(super) fn cstr(&mut self) -> Option<&'a [u8]> {
        let end = self.rest.iter().position(|&b| b == 0)?;
        let s = self.rest.get(..end)?;
        self.rest = self.rest.get(end + 1..)?;
        Some(s)
    }

    /// Reads a string that looks like text. In a body prefix (`!whole`) it
    /// may run to the end unterminated.
    pub(super) fn cstr_text(&mut self, whole: bool) -> bool {
        match self.cstr() {
            Some(s) => looks_like_text(s),
            None => {
                let rest = std::mem::take(&mut self.rest);
                !whole && looks_like_text(rest)
            }
        }
    }

    /// What is left.
    pub(super) fn rest(&self) -> &'a [u8] {
        self.rest
    }
}
