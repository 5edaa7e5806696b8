//! Walks one command's reply, packet by packet, to find where it ends and
//! what it says (rows, error, statement id). Rows are only counted.
//!
//! Result-set termination differs with `CLIENT_DEPRECATE_EOF`. When the
//! handshake was not seen the mode is learned from the first reply that
//! shows it: an EOF packet is always 5 bytes, while the OK packet that
//! replaces it is at least 7, and a row starting with 0xfe is at least 9.

use super::framing::{MAX_PART, Message};
use super::packets::{
    CLIENT_OPTIONAL_RESULTSET_METADATA, Reader, SERVER_MORE_RESULTS_EXISTS, SERVER_STATUS_CURSOR_EXISTS, eof_status,
    err_packet, ok_packet,
};
use crate::protocol::db::DbError;

/// Length of an EOF packet's payload (0xfe, warnings, status).
pub(super) const EOF_LEN: u64 = 5;
/// More columns than a result set can have (MySQL and MariaDB allow 4096
/// per table; select lists are bounded likewise).
const MAX_COLUMNS: u64 = 65_535;

/// The shape of reply a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// OK, ERR, LOCAL INFILE request, or result sets (text or binary),
    /// repeated while the server says more results follow.
    Generic,
    /// PREPARE_OK with parameter and column definitions, or ERR.
    Prepare,
    /// Binary rows and a terminator (COM_STMT_FETCH).
    Fetch,
    /// Column definitions and a terminator (COM_FIELD_LIST).
    FieldList,
    /// One packet, whatever it holds.
    Single,
    /// Authentication exchange until OK or ERR (COM_CHANGE_USER).
    Auth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Defs { left: u64 },
    AfterDefs,
    Rows,
    Infile,
    PrepDefs { left: u32, then: u32 },
    PrepEof { then: u32 },
    PrepMaybeEof { then: u32 },
    FieldDefs,
}

/// Connection-wide facts the reply walk reads and learns.
#[derive(Debug, Default)]
pub(super) struct Env {
    /// Negotiated capabilities, when the handshake was seen.
    pub caps: Option<u32>,
    /// Whether result sets end with OK rather than EOF, once known.
    pub deprecate_eof: Option<bool>,
    /// The server asked for a LOCAL INFILE: client packets are file data.
    pub upload: bool,
    /// A PREPARE reply may or may not have a trailing EOF (mode unknown):
    /// the next server packet with this sequence id is one if it looks so.
    pub swallow_eof: Option<u8>,
}

/// Whether the reply goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    More,
    Done,
}

/// One command's reply in progress.
#[derive(Debug)]
pub(super) struct Reply {
    expect: Expect,
    state: State,
    pub rows: Option<u64>,
    pub error: Option<DbError>,
    pub statement_id: Option<u32>,
    /// Schema the server reported through session-state tracking.
    pub schema: Option<String>,
}

impl Reply {
    pub(super) fn new(expect: Expect) -> Self {
        let state = match expect {
            Expect::Fetch => State::Rows,
            Expect::FieldList => State::FieldDefs,
            _ => State::Start,
        };
        let rows = (expect == Expect::Fetch).then_some(0);
        Reply { expect, state, rows, error: None, statement_id: None, schema: None }
    }

    /// The shape of reply this command gets.
    pub(super) fn expects(&self) -> Expect {
        self.expect
    }

    /// Takes the next server message of this reply.
    pub(super) fn step(&mut self, m: &Message, env: &mut Env) -> Step {
        let Some(&first) = m.head.first() else {
            return if self.expect == Expect::Single { Step::Done } else { Step::More };
        };
        if first == 0xff {
            // Neither a column definition (0x03 "def"), a text row (0xff is
            // no length prefix) nor a binary row (0x00) starts so.
            return match err_packet(m.head) {
                Some(e) => {
                    self.error = Some(e);
                    Step::Done
                }
                None => Step::More,
            };
        }
        match (self.expect, self.state) {
            (Expect::Single, _) => {
                if first == 0 {
                    self.ok(m, env);
                }
                Step::Done
            }
            (Expect::Auth, _) => {
                if first == 0 {
                    self.ok(m, env);
                    Step::Done
                } else {
                    Step::More
                }
            }
            (_, State::Start) if self.expect == Expect::Prepare => self.prepare_ok(m, env),
            (_, State::Start | State::Infile) => self.result_start(m, first, env),
            (_, State::Defs { left }) => {
                self.state = if left <= 1 { State::AfterDefs } else { State::Defs { left: left - 1 } };
                Step::More
            }
            (_, State::AfterDefs) => {
                let eof = first == 0xfe
                    && match env.deprecate_eof {
                        Some(true) => false,
                        Some(false) => m.len < 9,
                        None => m.len == EOF_LEN,
                    };
                if eof {
                    env.deprecate_eof.get_or_insert(false);
                    self.state = State::Rows;
                    if eof_status(m.head) & SERVER_STATUS_CURSOR_EXISTS != 0 {
                        // Rows come later through COM_STMT_FETCH.
                        return Step::Done;
                    }
                    return Step::More;
                }
                env.deprecate_eof.get_or_insert(true);
                self.state = State::Rows;
                self.row(m, first, env)
            }
            (_, State::Rows) => self.row(m, first, env),
            (_, State::PrepDefs { left, then }) => {
                if left > 1 {
                    self.state = State::PrepDefs { left: left - 1, then };
                    return Step::More;
                }
                self.after_prepare_block(then, m.last_seq, env)
            }
            (_, State::PrepEof { then }) => self.next_prepare_block(then),
            (_, State::PrepMaybeEof { then }) => {
                if first == 0xfe && m.len == EOF_LEN {
                    env.deprecate_eof = Some(false);
                    return self.next_prepare_block(then);
                }
                env.deprecate_eof = Some(true);
                // This packet is already the first column definition.
                if then > 1 {
                    self.state = State::PrepDefs { left: then - 1, then: 0 };
                    return Step::More;
                }
                Step::Done
            }
            (_, State::FieldDefs) => {
                if first == 0xfe && m.len < u64::from(MAX_PART) {
                    Step::Done
                } else {
                    Step::More
                }
            }
        }
    }

    fn ok(&mut self, m: &Message, env: &Env) -> u16 {
        let Some(ok) = ok_packet(m.head, env.caps) else { return 0 };
        if ok.schema.is_some() {
            self.schema = ok.schema;
        }
        if self.expect == Expect::Generic {
            self.rows = Some(self.rows.unwrap_or(0).saturating_add(ok.affected));
        }
        ok.status
    }

    fn result_start(&mut self, m: &Message, first: u8, env: &mut Env) -> Step {
        match first {
            0x00 => {
                let status = self.ok(m, env);
                self.more_or_done(status)
            }
            _ if self.state == State::Infile => Step::More,
            0xfe if m.len < 9 => self.more_or_done(eof_status(m.head)),
            0xfb => {
                env.upload = true;
                self.state = State::Infile;
                Step::More
            }
            _ => {
                let mut r = Reader(m.head);
                // Not a column count (or garbage): do not wait for that
                // many definitions.
                let Some(columns) = r.lenenc().filter(|&n| n > 0 && n <= MAX_COLUMNS) else { return Step::Done };
                self.rows.get_or_insert(0);
                // MariaDB's metadata cache and MySQL's optional metadata add
                // a byte: 0 means the column definitions are left out.
                self.state = if r.u8() == Some(0) { State::AfterDefs } else { State::Defs { left: columns } };
                Step::More
            }
        }
    }

    fn row(&mut self, m: &Message, first: u8, env: &Env) -> Step {
        if first == 0xfe && m.len < u64::from(MAX_PART) {
            let status = if m.len == EOF_LEN { eof_status(m.head) } else { self.ok_status_only(m, env) };
            return self.more_or_done(status);
        }
        self.rows = Some(self.rows.unwrap_or(0).saturating_add(1));
        Step::More
    }

    /// Status of the OK packet ending a result set (its affected-rows field
    /// is not a row count).
    fn ok_status_only(&mut self, m: &Message, env: &Env) -> u16 {
        let Some(ok) = ok_packet(m.head, env.caps) else { return 0 };
        if ok.schema.is_some() {
            self.schema = ok.schema;
        }
        ok.status
    }

    fn more_or_done(&mut self, status: u16) -> Step {
        if status & SERVER_MORE_RESULTS_EXISTS != 0 && self.expect == Expect::Generic {
            self.state = State::Start;
            Step::More
        } else {
            Step::Done
        }
    }

    fn prepare_ok(&mut self, m: &Message, env: &mut Env) -> Step {
        let mut r = Reader(m.head.get(1..).unwrap_or_default());
        let (Some(id), Some(columns), Some(params)) = (r.u32(), r.u16(), r.u16()) else { return Step::Done };
        self.statement_id = Some(id);
        let _ = (r.u8(), r.u16());
        let optional = env.caps.is_some_and(|c| c & CLIENT_OPTIONAL_RESULTSET_METADATA != 0);
        if optional && r.u8() == Some(0) {
            return Step::Done;
        }
        match (u32::from(params), u32::from(columns)) {
            (0, 0) => Step::Done,
            (0, c) => {
                self.state = State::PrepDefs { left: c, then: 0 };
                Step::More
            }
            (p, c) => {
                self.state = State::PrepDefs { left: p, then: c };
                Step::More
            }
        }
    }

    fn after_prepare_block(&mut self, then: u32, last_seq: u8, env: &mut Env) -> Step {
        match env.deprecate_eof {
            Some(true) => self.next_prepare_block(then),
            Some(false) => {
                self.state = State::PrepEof { then };
                Step::More
            }
            None if then > 0 => {
                self.state = State::PrepMaybeEof { then };
                Step::More
            }
            None => {
                env.swallow_eof = Some(last_seq.wrapping_add(1));
                Step::Done
            }
        }
    }

    fn next_prepare_block(&mut self, then: u32) -> Step {
        if then == 0 {
            return Step::Done;
        }
        self.state = State::PrepDefs { left: then, then: 0 };
        Step::More
    }
}
