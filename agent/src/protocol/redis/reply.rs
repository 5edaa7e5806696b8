//! Server-side framing: every RESP2/RESP3 value, walked incrementally with
//! a bounded stack of open aggregates. Of each top-level value only a
//! summary is kept ([`Reply`]): its type, element count, the start of an
//! error or status line, and what Pub/Sub classification needs.

use super::MAX_DEPTH;
use super::line::{Line, parse_int};
use crate::protocol::db::MAX_ERROR_MESSAGE;
use crate::protocol::http1::Ts;

/// Kept bytes of a header line (`*3\r`, `$1048576\r`).
const HEADER_KEEP: usize = 24;
/// Kept bytes of a top-level status or error (code, space, message, `\r`).
const TEXT_KEEP: usize = MAX_ERROR_MESSAGE + 72;
/// Kept bytes of an aggregate's first element (`subscribe`, `pmessage`).
const HEAD_KEEP: usize = 16;

/// What is known of one top-level reply once it is complete.
#[derive(Debug, Default)]
pub(super) struct Reply {
    /// Syscall carrying its first byte (an attribute's, if one precedes it).
    pub first: Ts,
    /// Syscall carrying its last byte.
    pub last: Ts,
    /// Its RESP type byte (`+`, `-`, `*`, `>`...), attributes aside.
    pub kind: u8,
    /// Elements of an aggregate (pairs for a map); none for scalars, nulls.
    pub count: Option<u64>,
    /// The start of a status line, error line or blob error.
    pub text: Vec<u8>,
    /// An aggregate's first element when it is a short string.
    pub head: Vec<u8>,
    /// The last integer directly inside the aggregate.
    pub last_int: Option<i64>,
    /// A gap hid bytes of `text` or `head`.
    pub hidden: bool,
}

/// Receives each complete top-level reply.
pub(super) trait ReplySink {
    fn reply(&mut self, reply: &Reply);
}

/// The server bytes are not RESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("server bytes are not RESP")]
pub(super) struct ProtocolError;

/// Where a value's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Nothing,
    Text,
    Head,
    Int,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a value's type byte.
    Type,
    /// In a line after the type byte.
    Line { kind: u8, keep: Keep },
    /// In a bulk payload.
    Bulk { left: u64, keep: Keep },
    /// In the `\r\n` after a payload.
    Crlf { need: u8 },
}

/// An open aggregate.
#[derive(Debug, Clone, Copy)]
struct Frame {
    left: u64,
    total: u64,
    attribute: bool,
}

/// The server direction of one connection.
#[derive(Debug)]
pub(super) struct ReplyParser {
    state: State,
    line: Line,
    stack: Vec<Frame>,
    /// Attribute frames on the stack: values inside them are not the reply's.
    attributes: usize,
    /// A top-level value has started and is not complete.
    in_value: bool,
    reply: Reply,
}

impl ReplyParser {
    pub(super) fn new() -> ReplyParser {
        ReplyParser {
            state: State::Type,
            line: Line::default(),
            stack: Vec::with_capacity(4),
            attributes: 0,
            in_value: false,
            reply: Reply::default(),
        }
    }

    /// Forgets any partial value: the next byte is taken as a value's start.
    pub(super) fn reset(&mut self) {
        self.state = State::Type;
        self.stack.clear();
        self.attributes = 0;
        self.in_value = false;
    }

    /// The first syscall of a reply begun but not complete.
    pub(super) fn in_progress(&self) -> Option<Ts> {
        self.in_value.then_some(self.reply.first)
    }

    /// Reads one chunk's captured bytes.
    pub(super) fn feed(&mut self, data: &[u8], ts: Ts, sink: &mut impl ReplySink) -> Result<(), ProtocolError> {
        let mut pos = 0;
        while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
            pos += self.step(rest, ts, sink)?;
        }
        Ok(())
    }

    fn step(&mut self, rest: &[u8], ts: Ts, sink: &mut impl ReplySink) -> Result<usize, ProtocolError> {
        match self.state {
            State::Type => {
                let kind = rest.first().copied().ok_or(ProtocolError)?;
                self.begin(kind, ts)?;
                Ok(1)
            }
            State::Line { kind, keep } => {
                let (used, ended) = self.line.feed(rest);
                if ended {
                    self.end_line(kind, keep, ts, sink)?;
                } else if is_header(kind) && !self.line.whole() {
                    return Err(ProtocolError);
                }
                Ok(used)
            }
            State::Bulk { left, keep } => {
                let take = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                let piece = rest.get(..take).unwrap_or(rest);
                if let Some((buf, max)) = self.bulk_target(keep) {
                    let room = max.saturating_sub(buf.len());
                    buf.extend_from_slice(piece.get(..room).unwrap_or(piece));
                }
                let left = left.saturating_sub(take as u64);
                if left > 0 {
                    self.state = State::Bulk { left, keep };
                    return Ok(take);
                }
                // The usual case, the payload's end and its CRLF in one chunk.
                if rest.get(take..take + 2) == Some(b"\r\n") {
                    self.value_done(ts, sink);
                    return Ok(take + 2);
                }
                self.state = State::Crlf { need: 2 };
                Ok(take)
            }
            State::Crlf { need } => {
                let expected = if need == 2 { b'\r' } else { b'\n' };
                if rest.first() != Some(&expected) {
                    return Err(ProtocolError);
                }
                if need == 2 {
                    self.state = State::Crlf { need: 1 };
                } else {
                    self.value_done(ts, sink);
                }
                Ok(1)
            }
        }
    }

    /// Accounts for `n` bytes the capture missed after the chunk's data.
    /// Returns false when the framing cannot account for them (the
    /// caller then resets the parser).
    pub(super) fn gap(&mut self, mut n: u64, ts: Ts, sink: &mut impl ReplySink) -> bool {
        while n > 0 {
            match self.state {
                State::Bulk { left, keep } => {
                    let skip = left.min(n);
                    if self.bulk_target(keep).is_some_and(|(buf, max)| buf.len() < max) {
                        self.reply.hidden = true;
                    }
                    n -= skip;
                    let left = left - skip;
                    self.state = if left == 0 { State::Crlf { need: 2 } } else { State::Bulk { left, keep } };
                }
                State::Crlf { need } => {
                    let skip = u64::from(need).min(n);
                    n -= skip;
                    let need = need.saturating_sub(skip as u8);
                    if need == 0 {
                        self.value_done(ts, sink);
                    } else {
                        self.state = State::Crlf { need };
                    }
                }
                State::Type | State::Line { .. } => return false,
            }
        }
        true
    }

    fn bulk_target(&mut self, keep: Keep) -> Option<(&mut Vec<u8>, usize)> {
        match keep {
            Keep::Text => Some((&mut self.reply.text, TEXT_KEEP)),
            Keep::Head => Some((&mut self.reply.head, HEAD_KEEP)),
            Keep::Nothing | Keep::Int => None,
        }
    }

    /// A value's type byte: decides what of it is kept.
    fn begin(&mut self, kind: u8, ts: Ts) -> Result<(), ProtocolError> {
        if !is_type_byte(kind) {
            // Includes RESP3's streamed `$?`/`*?` chunks' `;` and `.`,
            // which Redis never sends.
            return Err(ProtocolError);
        }
        if !self.in_value {
            self.in_value = true;
            let r = &mut self.reply;
            r.first = ts;
            r.kind = 0;
            r.count = None;
            r.text.clear();
            r.head.clear();
            r.last_int = None;
            r.hidden = false;
        }
        let top = self.stack.is_empty();
        if top && kind != b'|' {
            self.reply.kind = kind;
        }
        // The first element of a top-level aggregate, and integers directly
        // in it, are what Pub/Sub traffic is told by.
        let child = match self.stack.as_slice() {
            [frame] if self.attributes == 0 => Some(frame.total - frame.left),
            _ => None,
        };
        let keep = match (kind, top, child) {
            (b'+' | b'-' | b'!', true, _) => Keep::Text,
            (b'+' | b'$', false, Some(0)) => Keep::Head,
            (b':', false, Some(_)) => Keep::Int,
            _ => Keep::Nothing,
        };
        let line_keep = match keep {
            _ if is_header(kind) => HEADER_KEEP,
            Keep::Text => TEXT_KEEP,
            Keep::Head => HEAD_KEEP + 1,
            Keep::Int => HEADER_KEEP,
            Keep::Nothing => 0,
        };
        self.line.start(line_keep);
        self.state = State::Line { kind, keep };
        Ok(())
    }

    fn end_line(&mut self, kind: u8, keep: Keep, ts: Ts, sink: &mut impl ReplySink) -> Result<(), ProtocolError> {
        if !is_header(kind) {
            match keep {
                Keep::Text => self.reply.text.extend_from_slice(self.line.text()),
                Keep::Head if self.line.whole() => self.reply.head.extend_from_slice(self.line.text()),
                Keep::Int => self.reply.last_int = parse_int(self.line.text()).or(self.reply.last_int),
                Keep::Head | Keep::Nothing => {}
            }
            self.value_done(ts, sink);
            return Ok(());
        }
        let n = if self.line.whole() { parse_int(self.line.text()) } else { None }.ok_or(ProtocolError)?;
        let top = self.stack.is_empty();
        if n == -1 && kind != b'|' {
            // A RESP2 null (`$-1`, `*-1`).
            self.value_done(ts, sink);
            return Ok(());
        }
        let n = u64::try_from(n).map_err(|_| ProtocolError)?;
        if matches!(kind, b'$' | b'!' | b'=') {
            self.state = if n == 0 { State::Crlf { need: 2 } } else { State::Bulk { left: n, keep } };
            return Ok(());
        }
        let attribute = kind == b'|';
        let elements = if matches!(kind, b'%' | b'|') { n.checked_mul(2).ok_or(ProtocolError)? } else { n };
        if top && !attribute {
            self.reply.count = Some(n);
        }
        if elements == 0 {
            if attribute {
                self.state = State::Type;
            } else {
                self.value_done(ts, sink);
            }
            return Ok(());
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(ProtocolError);
        }
        self.stack.push(Frame { left: elements, total: elements, attribute });
        self.attributes += usize::from(attribute);
        self.state = State::Type;
        Ok(())
    }

    /// A value ended: close the aggregates it completes, and hand over the
    /// top-level value when it was the last piece of it.
    fn value_done(&mut self, ts: Ts, sink: &mut impl ReplySink) {
        self.state = State::Type;
        loop {
            let Some(frame) = self.stack.last_mut() else {
                self.reply.last = ts;
                self.in_value = false;
                sink.reply(&self.reply);
                return;
            };
            frame.left = frame.left.saturating_sub(1);
            if frame.left > 0 {
                return;
            }
            let attribute = frame.attribute;
            self.stack.pop();
            if attribute {
                // The value the attribute annotates takes its place.
                self.attributes = self.attributes.saturating_sub(1);
                return;
            }
        }
    }
}

/// Type bytes followed by a length rather than a value.
fn is_header(kind: u8) -> bool {
    matches!(kind, b'$' | b'!' | b'=' | b'*' | b'%' | b'~' | b'>' | b'|')
}

/// Whether `b` can start a RESP value: a server chunk starting with it may
/// be a reply boundary.
pub(super) fn is_type_byte(b: u8) -> bool {
    matches!(b, b'+' | b'-' | b':' | b',' | b'(' | b'#' | b'_' | b'$' | b'!' | b'=' | b'*' | b'%' | b'~' | b'>' | b'|')
}
