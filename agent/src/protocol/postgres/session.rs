//! One connection: a framer per direction, the queue of commands awaiting
//! their results, and what the startup told (user, database).
//!
//! Pairing: the server answers in client order, so results go to the
//! oldest waiting unit. A simple `Query` ends at `ReadyForQuery`; an
//! `Execute` ends at its `CommandComplete` / `ErrorResponse` /
//! `EmptyQueryResponse` / `PortalSuspended`; a `Sync` (no exchange of its
//! own) is answered by `ReadyForQuery`, which therefore closes every
//! Execute of its batch. After an error the server skips to `Sync`, so the
//! batch's later Executes never run: they are reported with the same
//! error, the error that stopped them.
//!
//! `Started` is emitted when the command's message is complete (a Query,
//! or the Execute closing a Parse/Bind/Execute unit), with `first` the
//! syscall carrying its first byte (the Query, or the unit's Parse or Bind).
//! Prepared-only batches (Parse + Sync), Describe, Close, Flush and
//! fast-path function calls are not exchanges.

use std::collections::VecDeque;
use std::sync::Arc;

use super::framing::{Framer, GapStep, Side, Step};
use super::statements::{MAX_PORTALS, MAX_STATEMENTS, NameMap, Statement, StatementRef};
use crate::protocol::db::{DbError, DbEvent, DbExchange, DbFailure, DbSession, MAX_IN_FLIGHT};
use crate::protocol::http1::{Chunk, Ts};

mod client;
mod server;

/// Chunks tried for a message boundary on a stream that has not shown one
/// valid message yet, before it is declared not PostgreSQL.
const MAX_PROBE_CHUNKS: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Simple Query: its reply ends at `ReadyForQuery`.
    Query,
    /// Extended-protocol Execute: one result.
    Execute,
    /// Sync or FunctionCall: no exchange, but a `ReadyForQuery` answers it.
    Sync,
}

/// A client command awaiting its result.
#[derive(Debug)]
struct Unit {
    kind: Kind,
    seq: u64,
    statement: StatementRef,
    first: Ts,
    last: Ts,
    response_first: Option<Ts>,
    response_last: Option<Ts>,
    rows: Option<u64>,
    /// DataRows of the result being read.
    data_rows: u64,
    error: Option<DbError>,
    truncated: bool,
    /// Sent after the server side lost framing (see `Core::settle_lost`).
    after_loss: bool,
    /// Its result is complete; it leaves the queue once all before it have.
    done: bool,
}

impl Unit {
    fn touch(&mut self, first: Ts, last: Ts) {
        self.response_first.get_or_insert(first);
        self.response_last = Some(last);
    }
}

/// PostgreSQL frontend/backend protocol (v3) parser for one connection.
///
/// Chunks must come in syscall order per direction, and client and server
/// chunks in the order the syscalls happened.
#[derive(Debug)]
pub struct PostgresSession {
    client: Framer,
    server: Framer,
    core: Core,
}

/// Everything but the framers, so a framed message (which may borrow a
/// framer's buffer) can be handled while the rest is mutated.
#[derive(Debug)]
struct Core {
    /// The client has not finished its startup phase (untyped messages).
    startup: bool,
    /// The server's next byte answers an SSL or GSS encryption request.
    negotiation: bool,
    /// Framing lost on that side: waiting for a chunk that starts a message.
    client_lost: bool,
    server_lost: bool,
    client_seen: bool,
    server_seen: bool,
    client_probes: u32,
    server_probes: u32,
    pending: VecDeque<Unit>,
    next_seq: u64,
    user: Option<String>,
    namespace: Option<String>,
    statements: NameMap,
    portals: NameMap,
    /// First byte of the Parse/Bind that opened the Execute being built.
    unit_first: Option<Ts>,
    /// Statement of the latest Parse/Bind, for an Execute hidden by a gap.
    unit_statement: StatementRef,
    /// The server skips to Sync after an Execute failed: Executes the
    /// client sends before its Sync fail with the same error.
    batch_error: Option<DbError>,
    broken: bool,
    closed: bool,
}

impl PostgresSession {
    /// A parser for a new connection (`mid_stream: false`: the client's
    /// first bytes are its startup) or for one already open when capture
    /// began (`true`: both sides wait for a chunk that starts a message).
    pub fn new(mid_stream: bool) -> Self {
        Self {
            client: Framer::new(Side::Frontend, mid_stream),
            server: Framer::new(Side::Backend, true),
            core: Core {
                startup: !mid_stream,
                negotiation: false,
                client_lost: mid_stream,
                server_lost: mid_stream,
                client_seen: false,
                server_seen: false,
                client_probes: 0,
                server_probes: 0,
                pending: VecDeque::new(),
                next_seq: 0,
                user: None,
                namespace: None,
                statements: NameMap::new(MAX_STATEMENTS),
                portals: NameMap::new(MAX_PORTALS),
                unit_first: None,
                unit_statement: None,
                batch_error: None,
                broken: false,
                closed: false,
            },
        }
    }

    /// Commands awaiting their result (at most `MAX_IN_FLIGHT`).
    #[cfg(test)]
    pub(super) fn in_flight(&self) -> usize {
        self.core.pending.len()
    }

    /// Heap bytes held by partial messages.
    #[cfg(test)]
    pub(super) fn buffered(&self) -> usize {
        self.client.buffered() + self.server.buffered()
    }

    /// Named prepared statements remembered.
    #[cfg(test)]
    pub(super) fn statements(&self) -> (usize, usize) {
        (self.core.statements.len(), self.core.statements.order_len())
    }
}

fn ts_of(chunk: &Chunk<'_>) -> Ts {
    Ts { enter_ns: chunk.enter_ns, exit_ns: chunk.exit_ns }
}

fn gap_of(chunk: &Chunk<'_>) -> u64 {
    chunk.size.saturating_sub(chunk.data.len() as u64)
}

impl DbSession for PostgresSession {
    fn on_client_bytes(&mut self, chunk: &Chunk) -> Vec<DbEvent> {
        let mut out = Vec::new();
        let core = &mut self.core;
        if core.broken || core.closed {
            return out;
        }
        let ts = ts_of(chunk);
        let mut data = chunk.data;
        if core.client_lost {
            if !core.client_resync(data) {
                return out;
            }
            self.client.reset();
        }
        while !data.is_empty() && !core.broken && !core.client_lost {
            self.client.set_typed(!core.startup);
            let (used, step) = self.client.next(data, ts);
            let progress = used > 0 || matches!(step, Step::Message(_));
            match step {
                Step::Message(m) => core.client_message(m, &mut out),
                Step::NeedMore => {}
                Step::Invalid => core.client_invalid(),
            }
            data = data.get(used..).unwrap_or_default();
            if !progress {
                break;
            }
        }
        let gap = gap_of(chunk);
        if gap > 0 && !core.broken && !core.client_lost {
            match self.client.gap(gap, ts) {
                GapStep::Absorbed => {}
                GapStep::Message { msg, lost } => {
                    core.client_message(msg, &mut out);
                    if lost {
                        core.client_lost_framing(ts, &mut out);
                    }
                }
                GapStep::Lost => core.client_lost_framing(ts, &mut out),
            }
        }
        out
    }

    fn on_server_bytes(&mut self, chunk: &Chunk) -> Vec<DbEvent> {
        let mut out = Vec::new();
        let core = &mut self.core;
        if core.broken || core.closed {
            return out;
        }
        let ts = ts_of(chunk);
        let mut data = chunk.data;
        if core.negotiation
            && let Some((&answer, rest)) = data.split_first()
        {
            core.negotiation = false;
            match answer {
                b'N' => data = rest,
                // An old server's ErrorResponse: framed as usual.
                b'E' => {}
                // TLS or GSS encryption follows: nothing readable.
                _ => {
                    core.broken = true;
                    return out;
                }
            }
        }
        if core.server_lost {
            match core.server_resync(data, ts, &mut out) {
                Some(rest) => data = rest,
                None => return out,
            }
            self.server.reset();
        }
        while !data.is_empty() && !core.broken && !core.server_lost {
            let (used, step) = self.server.next(data, ts);
            let progress = used > 0 || matches!(step, Step::Message(_));
            match step {
                Step::Message(m) => core.server_message(m.tag, m.body, m.first, m.last, &mut out),
                Step::NeedMore => {}
                Step::Invalid => core.server_invalid(ts),
            }
            data = data.get(used..).unwrap_or_default();
            if !progress {
                break;
            }
        }
        let gap = gap_of(chunk);
        if gap > 0 && !core.broken && !core.server_lost {
            match self.server.gap(gap, ts) {
                GapStep::Absorbed => {}
                GapStep::Message { msg, lost } => {
                    if msg.cut {
                        core.mark_current_truncated();
                    }
                    core.server_message(msg.tag, msg.body, msg.first, msg.last, &mut out);
                    if lost {
                        core.server_lost_framing(ts);
                    }
                }
                GapStep::Lost => core.server_lost_framing(ts),
            }
        }
        out
    }

    fn on_close(&mut self, ts_ns: u64, reset: bool) -> Vec<DbEvent> {
        let mut out = Vec::new();
        let core = &mut self.core;
        if core.closed {
            return out;
        }
        core.closed = true;
        let failure = if reset { DbFailure::ConnectionReset } else { DbFailure::ConnectionClosed };
        while let Some(u) = core.pending.pop_front() {
            if u.kind != Kind::Sync {
                out.push(DbEvent::Exchange(core.exchange(u, Some(failure), Some(ts_ns))));
            }
        }
        self.client.reset();
        self.server.reset();
        out
    }

    fn is_broken(&self) -> bool {
        self.core.broken
    }
}

impl Core {
    /// Queues a command; commands with an exchange are announced.
    fn push(
        &mut self,
        kind: Kind,
        statement: StatementRef,
        first: Ts,
        last: Ts,
        truncated: bool,
        out: &mut Vec<DbEvent>,
    ) {
        while self.pending.len() >= MAX_IN_FLIGHT {
            // The oldest command's result was never captured.
            let Some(old) = self.pending.pop_front() else { break };
            if old.kind != Kind::Sync {
                out.push(DbEvent::Exchange(self.exchange(old, Some(DbFailure::Truncated), None)));
            }
            self.drain(out);
        }
        let seq = self.next_seq;
        if kind != Kind::Sync {
            self.next_seq += 1;
            out.push(DbEvent::Started { seq, first });
        }
        self.pending.push_back(Unit {
            kind,
            seq,
            statement,
            first,
            last,
            response_first: None,
            response_last: None,
            rows: None,
            data_rows: 0,
            error: None,
            truncated,
            after_loss: self.server_lost,
            done: false,
        });
    }

    /// Emits the finished units at the head of the queue.
    fn drain(&mut self, out: &mut Vec<DbEvent>) {
        while self.pending.front().is_some_and(|u| u.done) {
            let Some(u) = self.pending.pop_front() else { break };
            if u.kind != Kind::Sync {
                out.push(DbEvent::Exchange(self.exchange(u, None, None)));
            }
        }
    }

    fn exchange(&self, u: Unit, failure: Option<DbFailure>, closed_ns: Option<u64>) -> DbExchange {
        let (operation, collection, query_text, cut) = match u.statement.as_deref() {
            Some(Statement { summary, cut }) => (
                summary.operation.clone(),
                summary.collection.clone(),
                Some(summary.text.clone()).filter(|t| !t.is_empty()),
                *cut,
            ),
            None => (None, None, None, false),
        };
        let truncated = (u.truncated || cut).then_some(DbFailure::Truncated);
        DbExchange {
            seq: u.seq,
            operation,
            collection,
            query_text,
            namespace: self.namespace.clone(),
            user: self.user.clone(),
            rows: u.rows,
            error: u.error,
            failure: failure.or(truncated),
            batch_size: 1,
            request_first: u.first,
            request_last: u.last,
            response_first: u.response_first,
            response_last: u.response_last,
            closed_ns,
        }
    }

    /// A stream that never showed a valid message gets a few chunks to
    /// show one; then it is not PostgreSQL.
    fn probe_failed(seen: bool, probes: &mut u32) -> bool {
        if seen {
            return false;
        }
        *probes += 1;
        *probes >= MAX_PROBE_CHUNKS
    }
}

/// A statement made from SQL text the session saw.
fn statement(sql: &[u8], cut: bool) -> Arc<Statement> {
    let summary = crate::protocol::sql::summarize(&String::from_utf8_lossy(sql));
    Arc::new(Statement { summary, cut })
}
