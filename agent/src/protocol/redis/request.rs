//! Client-side framing: RESP arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`)
//! and inline commands (`PING\r\n`), read incrementally into [`Command`]s.
//! Argument payloads are walked by their length, never buffered whole.

use super::command::{Command, Finished};
use super::line::{Line, parse_int};
use super::{MAX_ARGS, detect};
use crate::protocol::http1::Ts;

/// Kept bytes of a header line (`*1048576\r`, `$512\r`).
const HEADER_KEEP: usize = 24;
/// Kept bytes of an inline command; its later arguments are dropped.
const INLINE_KEEP: usize = 1024;
/// Longest inline command Redis accepts (`PROTO_INLINE_MAX_SIZE`).
const INLINE_MAX: u64 = 64 * 1024;

/// A command read from the client.
#[derive(Debug)]
pub(super) struct Done {
    pub command: Finished,
    /// Syscall carrying the command's last byte.
    pub last: Ts,
}

/// Receives what the client side reads.
pub(super) trait RequestSink {
    /// A command's first byte was seen at `first`; it will come out as a
    /// [`Done`] (or be cut short by [`RequestParser::abort`]).
    fn started(&mut self, first: Ts);
    /// The command started last is complete.
    fn complete(&mut self, done: Done);
}

/// The bytes are not a Redis command stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("client bytes are not RESP")]
pub(super) struct ProtocolError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between commands.
    Idle,
    /// In `*N\r\n`.
    Count,
    /// Expecting an argument's `$`.
    ArgStart,
    /// In `$L\r\n`.
    ArgLen,
    /// In an argument's payload.
    ArgBody { left: u64 },
    /// In the `\r\n` after a payload.
    ArgCrlf { need: u8 },
    /// In an inline command's line.
    Inline,
    /// Sync lost: waiting for a chunk that starts like a command.
    Lost,
}

/// The client direction of one connection.
#[derive(Debug)]
pub(super) struct RequestParser {
    state: State,
    line: Line,
    command: Option<Command>,
    /// Arguments in the command being read, and the index of the next.
    argc: u64,
    next: u64,
    /// The current argument: its kept prefix, its length, how much to keep,
    /// whether a gap hid part of the kept prefix.
    arg: Vec<u8>,
    arg_len: u64,
    arg_limit: usize,
    arg_hidden: bool,
    first: Ts,
}

impl RequestParser {
    /// A parser at a command boundary, or waiting to resynchronise when
    /// joining mid-stream.
    pub(super) fn new(mid_stream: bool) -> RequestParser {
        RequestParser {
            state: if mid_stream { State::Lost } else { State::Idle },
            line: Line::default(),
            command: None,
            argc: 0,
            next: 0,
            arg: Vec::new(),
            arg_len: 0,
            arg_limit: 0,
            arg_hidden: false,
            first: Ts::default(),
        }
    }

    /// Whether the parser waits for a chunk that starts like a command.
    pub(super) fn is_lost(&self) -> bool {
        self.state == State::Lost
    }

    /// Leaves the lost state if `data` (a chunk's start) looks like a
    /// command; returns whether it did.
    pub(super) fn try_resync(&mut self, data: &[u8]) -> bool {
        if self.state == State::Lost && detect::looks_like_command(data) {
            self.state = State::Idle;
        }
        self.state != State::Lost
    }

    /// Reads one chunk's captured bytes. On a protocol error the command
    /// being read is completed as truncated and the parser is lost.
    pub(super) fn feed(&mut self, data: &[u8], ts: Ts, sink: &mut impl RequestSink) -> Result<(), ProtocolError> {
        let mut pos = 0;
        while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
            match self.step(rest, ts, sink) {
                Ok(used) => pos += used,
                Err(e) => {
                    self.lose(ts, sink);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Advances over the start of `rest` (never empty); returns bytes used.
    fn step(&mut self, rest: &[u8], ts: Ts, sink: &mut impl RequestSink) -> Result<usize, ProtocolError> {
        match self.state {
            State::Lost => Ok(rest.len()),
            State::Idle => {
                // Redis skips empty inline lines; so do we, with blanks.
                let Some(at) = rest.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')) else {
                    return Ok(rest.len());
                };
                self.first = ts;
                if rest.get(at) == Some(&b'*') {
                    self.line.start(HEADER_KEEP);
                    self.state = State::Count;
                    Ok(at + 1)
                } else {
                    self.line.start(INLINE_KEEP);
                    self.state = State::Inline;
                    sink.started(ts);
                    Ok(at)
                }
            }
            State::Count => {
                let (used, ended) = self.line.feed(rest);
                if ended {
                    let n = header_number(&self.line).ok_or(ProtocolError)?;
                    if n > MAX_ARGS as i64 {
                        return Err(ProtocolError);
                    }
                    if n <= 0 {
                        // `*0` and `*-1` are ignored by Redis: no command.
                        self.state = State::Idle;
                    } else {
                        sink.started(self.first);
                        self.command = Some(Command::new(n as u64));
                        self.argc = n as u64;
                        self.next = 0;
                        self.state = State::ArgStart;
                    }
                } else if !self.line.whole() {
                    return Err(ProtocolError);
                }
                Ok(used)
            }
            State::ArgStart => {
                if rest.first() != Some(&b'$') {
                    return Err(ProtocolError);
                }
                self.line.start(HEADER_KEEP);
                self.state = State::ArgLen;
                Ok(1)
            }
            State::ArgLen => {
                let (used, ended) = self.line.feed(rest);
                if ended {
                    let len = header_number(&self.line).and_then(|n| u64::try_from(n).ok()).ok_or(ProtocolError)?;
                    self.arg.clear();
                    self.arg_len = len;
                    self.arg_hidden = false;
                    self.arg_limit = self.command.as_ref().map_or(0, |c| c.capture_limit(self.next));
                    self.state = State::ArgBody { left: len };
                    if len == 0 {
                        self.state = State::ArgCrlf { need: 2 };
                    }
                } else if !self.line.whole() {
                    return Err(ProtocolError);
                }
                Ok(used)
            }
            State::ArgBody { left } => {
                let take = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                let piece = rest.get(..take).unwrap_or(rest);
                let room = self.arg_limit.saturating_sub(self.arg.len());
                self.arg.extend_from_slice(piece.get(..room).unwrap_or(piece));
                let left = left.saturating_sub(take as u64);
                if left > 0 {
                    self.state = State::ArgBody { left };
                    return Ok(take);
                }
                if rest.get(take..take + 2) == Some(b"\r\n") {
                    self.end_arg(ts, sink);
                    return Ok(take + 2);
                }
                self.state = State::ArgCrlf { need: 2 };
                Ok(take)
            }
            State::ArgCrlf { need } => {
                let expected = if need == 2 { b'\r' } else { b'\n' };
                if rest.first() != Some(&expected) {
                    return Err(ProtocolError);
                }
                if need == 2 {
                    self.state = State::ArgCrlf { need: 1 };
                } else {
                    self.end_arg(ts, sink);
                }
                Ok(1)
            }
            State::Inline => {
                let (used, ended) = self.line.feed(rest);
                if ended {
                    self.end_inline(ts, sink);
                } else if self.line.seen() > INLINE_MAX {
                    return Err(ProtocolError);
                }
                Ok(used)
            }
        }
    }

    /// Accounts for `n` bytes the capture missed after the chunk's data.
    /// Returns false when they cannot be accounted for: the command being
    /// read (if any) is completed as truncated and the parser is lost.
    pub(super) fn gap(&mut self, mut n: u64, ts: Ts, sink: &mut impl RequestSink) -> bool {
        while n > 0 {
            match self.state {
                State::ArgBody { left } => {
                    let skip = left.min(n);
                    if self.arg.len() < self.arg_limit {
                        self.arg_hidden = true;
                    }
                    n -= skip;
                    let left = left - skip;
                    self.state = if left == 0 { State::ArgCrlf { need: 2 } } else { State::ArgBody { left } };
                }
                State::ArgCrlf { need } => {
                    let skip = u64::from(need).min(n);
                    n -= skip;
                    let need = need.saturating_sub(skip as u8);
                    if need == 0 {
                        self.end_arg(ts, sink);
                    } else {
                        self.state = State::ArgCrlf { need };
                    }
                }
                State::Lost => return false,
                _ => {
                    self.lose(ts, sink);
                    return false;
                }
            }
        }
        true
    }

    /// Ends the command being read, if any, as cut short (at close).
    pub(super) fn abort(&mut self, ts: Ts) -> Option<Done> {
        let done = self.take_partial(ts);
        self.state = State::Lost;
        done
    }

    fn lose(&mut self, ts: Ts, sink: &mut impl RequestSink) {
        if let Some(done) = self.take_partial(ts) {
            sink.complete(done);
        }
        self.state = State::Lost;
    }

    fn take_partial(&mut self, ts: Ts) -> Option<Done> {
        let mut command = match self.state {
            State::Inline => {
                let command = self.inline_command();
                self.line.wipe();
                command
            }
            _ => self.command.take()?,
        };
        command.set_truncated();
        self.command = None;
        Some(Done { command: command.finish(), last: ts })
    }

    fn end_arg(&mut self, ts: Ts, sink: &mut impl RequestSink) {
        if let Some(command) = self.command.as_mut() {
            command.push_arg(self.next, &self.arg, self.arg_len, self.arg_hidden);
        }
        self.arg.clear();
        self.next += 1;
        if self.next < self.argc {
            self.state = State::ArgStart;
            return;
        }
        self.state = State::Idle;
        if let Some(command) = self.command.take() {
            sink.complete(Done { command: command.finish(), last: ts });
        }
    }

    fn end_inline(&mut self, ts: Ts, sink: &mut impl RequestSink) {
        let command = self.inline_command();
        self.line.wipe();
        self.state = State::Idle;
        sink.complete(Done { command: command.finish(), last: ts });
    }

    /// The inline command in the line buffer (Redis splits on blanks; its
    /// quoting rules are not followed).
    fn inline_command(&self) -> Command {
        let text = self.line.text();
        let words = || text.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty());
        let mut command = Command::new(words().count() as u64);
        for (i, word) in words().enumerate() {
            let limit = command.capture_limit(i as u64);
            command.push_arg(i as u64, word.get(..limit).unwrap_or(word), word.len() as u64, false);
        }
        if !self.line.whole() {
            command.set_truncated();
        }
        command
    }
}

/// The number of a whole header line.
fn header_number(line: &Line) -> Option<i64> {
    if line.whole() { parse_int(line.text()) } else { None }
}
