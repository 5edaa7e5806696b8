//! One MySQL connection: handshake, commands queued in order, replies
//! walked to their end, gaps turned into flagged exchanges.

use std::collections::VecDeque;

mod server;

use super::commands::{Command, Effect, decode};
use super::framing::{Framer, Message};
use super::packets::{CLIENT_COMPRESS, CLIENT_DEPRECATE_EOF, CLIENT_ZSTD_COMPRESSION, handshake_response};
use super::reply::{Env, Expect, Reply};
use super::statements::Statements;
use super::{looks_like_client_command, looks_like_server_greeting};
use crate::protocol::db::{DbEvent, DbExchange, DbFailure, DbSession, MAX_IN_FLIGHT};
use crate::protocol::http1::{Chunk, Ts};

/// Client head bytes kept per message: enough SQL to summarise.
const CLIENT_HEAD: usize = 32 * 1024;
/// Server head bytes kept per message: OK, ERR and handshake packets are
/// small; rows are only counted.
const SERVER_HEAD: usize = 2048;
/// Client messages or chunks in a row that make no sense before the stream
/// is declared not MySQL.
const MAX_GARBAGE: u32 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the server's Initial Handshake.
    Greeting,
    /// Waiting for the client's HandshakeResponse.
    Response,
    /// Authentication packets until the server's OK or ERR.
    Auth,
    Command,
    /// Handshake refused or connection closed: nothing more to report.
    Closed,
}

#[derive(Debug)]
struct Pending {
    ex: DbExchange,
    reply: Reply,
    effect: Effect,
    /// Sequence id the reply's first packet must carry.
    expect_seq: u8,
    replying: bool,
    /// A gap hid where this command's reply is: it only waits to be flushed.
    lost: bool,
}

/// MySQL / MariaDB client-server protocol parser for one connection.
#[derive(Debug)]
pub struct MysqlSession {
    client: Framer,
    server: Framer,
    conn: Conn,
}

#[derive(Debug)]
struct Conn {
    phase: Phase,
    broken: bool,
    /// Started mid-stream and nothing decoded yet: a greeting may still come.
    fresh: bool,
    server_caps: Option<u32>,
    env: Env,
    user: Option<String>,
    namespace: Option<String>,
    queue: VecDeque<Pending>,
    next_seq: u64,
    statements: Statements,
    garbage: u32,
    /// Set while handling messages: the server framer must drop its position.
    lose_server: bool,
    out: Vec<DbEvent>,
}

impl MysqlSession {
    /// A parser for a connection seen from its start (`mid_stream: false`:
    /// the server's greeting comes first) or joined while open.
    pub fn new(mid_stream: bool) -> Self {
        MysqlSession {
            client: Framer::new(CLIENT_HEAD, true, !mid_stream),
            server: Framer::new(SERVER_HEAD, false, !mid_stream),
            conn: Conn {
                phase: if mid_stream { Phase::Command } else { Phase::Greeting },
                broken: false,
                fresh: mid_stream,
                server_caps: None,
                env: Env::default(),
                user: None,
                namespace: None,
                queue: VecDeque::new(),
                next_seq: 0,
                statements: Statements::default(),
                garbage: 0,
                lose_server: false,
                out: Vec::new(),
            },
        }
    }

    #[cfg(test)]
    pub(super) fn statement_count(&self) -> usize {
        self.conn.statements.len()
    }
}

fn ts_of(chunk: &Chunk) -> Ts {
    Ts { enter_ns: chunk.enter_ns, exit_ns: chunk.exit_ns }
}

impl DbSession for MysqlSession {
    fn on_client_bytes(&mut self, chunk: &Chunk) -> Vec<DbEvent> {
        if self.conn.broken || self.conn.phase == Phase::Closed {
            return Vec::new();
        }
        if self.conn.phase == Phase::Greeting && !chunk.data.is_empty() {
            // MySQL servers speak first.
            self.conn.broken = true;
            return Vec::new();
        }
        if self.client.is_lost() {
            if self.conn.env.upload || !looks_like_client_command(chunk.data) {
                if !self.conn.env.upload {
                    self.conn.garbage_seen();
                }
                return std::mem::take(&mut self.conn.out);
            }
            self.client.resync();
        }
        let conn = &mut self.conn;
        self.client.push(chunk, |m| conn.on_client_message(&m));
        if self.client.is_lost() {
            self.conn.on_client_lost();
        }
        self.apply_lose_server();
        std::mem::take(&mut self.conn.out)
    }

    fn on_server_bytes(&mut self, chunk: &Chunk) -> Vec<DbEvent> {
        if self.conn.broken || self.conn.phase == Phase::Closed {
            return Vec::new();
        }
        if self.server.is_lost() {
            if self.conn.fresh && looks_like_server_greeting(chunk.data) {
                self.conn.fresh = false;
                self.conn.phase = Phase::Greeting;
                self.client.resync();
                self.server.resync();
            } else if self.conn.can_resync_server(chunk.data) {
                self.server.resync();
            } else {
                if self.conn.server_dropped(chunk) {
                    self.server.resync();
                }
                return std::mem::take(&mut self.conn.out);
            }
        }
        let conn = &mut self.conn;
        self.server.push(chunk, |m| conn.on_server_message(&m));
        if self.server.is_lost() {
            self.conn.on_server_lost();
        }
        self.apply_lose_server();
        std::mem::take(&mut self.conn.out)
    }

    fn on_close(&mut self, ts_ns: u64, reset: bool) -> Vec<DbEvent> {
        let failure = if reset { DbFailure::ConnectionReset } else { DbFailure::ConnectionClosed };
        while let Some(mut p) = self.conn.queue.pop_front() {
            if !p.lost {
                p.ex.failure = Some(failure);
            }
            p.ex.closed_ns = Some(ts_ns);
            p.ex.rows = p.reply.rows;
            p.ex.error = p.reply.error.take();
            self.conn.out.push(DbEvent::Exchange(p.ex));
        }
        self.conn.phase = Phase::Closed;
        std::mem::take(&mut self.conn.out)
    }

    fn is_broken(&self) -> bool {
        self.conn.broken
    }
}

impl MysqlSession {
    fn apply_lose_server(&mut self) {
        if std::mem::take(&mut self.conn.lose_server) {
            self.server.lose();
            self.conn.on_server_lost();
        }
    }
}

impl Conn {
    fn garbage_seen(&mut self) {
        self.garbage = self.garbage.saturating_add(1);
        if self.garbage > MAX_GARBAGE {
            self.broken = true;
        }
    }

    fn on_client_message(&mut self, m: &Message) {
        match self.phase {
            // The client spoke first: not MySQL.
            Phase::Greeting => self.broken = true,
            Phase::Response => self.handshake_response(m),
            Phase::Auth | Phase::Closed => {}
            Phase::Command => self.command(m),
        }
    }

    fn handshake_response(&mut self, m: &Message) {
        let Some(r) = handshake_response(m.head) else {
            self.broken = true;
            return;
        };
        let caps = r.caps & self.server_caps.unwrap_or(u32::MAX);
        // After an SSLRequest the rest is TLS; compressed packets are not
        // decoded either.
        if r.ssl_request || caps & (CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION) != 0 {
            self.broken = true;
            return;
        }
        self.env.caps = Some(caps);
        self.env.deprecate_eof = Some(caps & CLIENT_DEPRECATE_EOF != 0);
        self.user = r.user;
        self.namespace = r.database;
        self.phase = Phase::Auth;
    }

    fn command(&mut self, m: &Message) {
        if self.env.upload {
            // LOCAL INFILE data: an empty packet ends it.
            if m.len == 0 {
                self.env.upload = false;
            }
            return;
        }
        if m.seq != 0 {
            let auth = self.queue.back().is_some_and(|p| p.reply_expects_auth());
            if !auth {
                self.garbage_seen();
            }
            return;
        }
        let Some(cmd) = decode(m.head, self.env.caps) else {
            self.garbage_seen();
            return;
        };
        self.garbage = 0;
        self.fresh = false;
        self.flush_lost();
        let (mut statement, expect, effect, statement_id) = match cmd {
            Command::Silent => return,
            Command::CloseStatement(id) => {
                self.statements.remove(id);
                return;
            }
            Command::Unsupported => {
                self.broken = true;
                return;
            }
            Command::Exchange { statement, expect, effect, statement_id } => (statement, expect, effect, statement_id),
        };
        if let Some(s) = statement_id.and_then(|id| self.statements.get(id)) {
            if statement.operation.as_deref() == Some("EXECUTE") && s.operation.is_some() {
                statement.operation.clone_from(&s.operation);
            }
            statement.collection.clone_from(&s.collection);
            statement.text.clone_from(&s.text);
        }
        if self.queue.len() >= MAX_IN_FLIGHT
            && let Some(mut old) = self.queue.pop_front()
        {
            if old.replying {
                self.lose_server = true;
            }
            old.ex.failure = Some(DbFailure::Truncated);
            self.emit(old);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let ex = DbExchange {
            seq,
            operation: statement.operation,
            collection: statement.collection,
            query_text: statement.text,
            namespace: self.namespace.clone(),
            user: self.user.clone(),
            batch_size: 1,
            request_first: m.first,
            request_last: m.last,
            failure: m.truncated.then_some(DbFailure::Truncated),
            ..Default::default()
        };
        self.out.push(DbEvent::Started { seq, first: m.first });
        self.queue.push_back(Pending {
            ex,
            reply: Reply::new(expect),
            effect,
            expect_seq: m.last_seq.wrapping_add(1),
            replying: false,
            lost: false,
        });
    }

    fn on_client_lost(&mut self) {
        if matches!(self.phase, Phase::Greeting | Phase::Response | Phase::Auth) {
            self.phase = Phase::Command;
        }
    }
}

impl Pending {
    fn reply_expects_auth(&self) -> bool {
        self.reply.expects() == Expect::Auth
    }
}

#[cfg(test)]
impl MysqlSession {
    /// Bytes the session holds in buffers (capacity).
    pub(super) fn buffered(&self) -> usize {
        self.client.capacity() + self.server.capacity()
    }
}
