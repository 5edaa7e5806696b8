//! Stream reassembly and protocol dispatch: the bytes of each connection,
//! in syscall order, go to the parser that recognised them.

mod detect;

use kspan_common::{Direction, Role, Source};
use rustc_hash::FxHashMap;

use crate::{
    capture::decode::DataRecord,
    conntrack::Connection,
    protocol::{
        db::{DbEvent, DbSession, DbSystem},
        http1::{Chunk, Http1Event, Http1Session},
        http2::{Http2Event, Http2Session},
        mysql::MysqlSession,
        postgres::PostgresSession,
        redis::RedisSession,
    },
};
use detect::Detecting;

/// A parser's output.
#[derive(Debug)]
pub enum AppEvent {
    Http1(Http1Event),
    Http2(Http2Event),
    Db(DbSystem, DbEvent),
}

/// A parser's output, tagged with where it happened.
#[derive(Debug)]
pub struct ProtocolEvent {
    pub pid: u32,
    /// Thread that did the I/O (for in-process linking).
    pub tid: u32,
    /// Role the connection turned out to have (detection may settle an
    /// unknown one).
    pub role: Role,
    pub event: AppEvent,
}

/// How many chunks a connection may show before we give up recognising it:
/// a server may speak first (an HTTP/2 server's SETTINGS precede the
/// client's preface in its own syscall order), and on a connection met
/// mid-stream the first bytes may be the middle of a body.
const PATIENCE: u8 = 4;
const MID_STREAM_PATIENCE: u8 = 8;

enum Parser {
    Http1(Box<Http1Session>),
    Http2(Box<Http2Session>),
    Db(DbSystem, Box<dyn DbSession + Send>),
}

impl Parser {
    fn db(system: DbSystem, mid_stream: bool) -> Parser {
        let session: Box<dyn DbSession + Send> = match system {
            DbSystem::Postgresql => Box::new(PostgresSession::new(mid_stream)),
            DbSystem::Mysql => Box::new(MysqlSession::new(mid_stream)),
            DbSystem::Redis => Box::new(RedisSession::new(mid_stream)),
        };
        Parser::Db(system, session)
    }
}

enum Session {
    Detecting(Detecting),
    Parsing {
        parser: Parser,
        role: Role,
    },
    /// Not a protocol we parse: its bytes are dropped without a look.
    Ignored,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct StreamStats {
    pub sessions_http1: u64,
    pub sessions_http2: u64,
    pub sessions_db: u64,
    pub sessions_ignored: u64,
    pub sessions_over_capacity: u64,
    pub bytes_parsed: u64,
}

pub struct Streams {
    sessions: FxHashMap<u64, Session>,
    capacity: usize,
    pub stats: StreamStats,
}

impl Streams {
    /// `capacity` bounds the sessions kept; past it new connections are not
    /// parsed (counted) rather than growing memory.
    pub fn new(capacity: usize) -> Self {
        Self { sessions: FxHashMap::default(), capacity, stats: StreamStats::default() }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Appends to `out` what the bytes of `rec` completed: one buffer
    /// reused for every record, instead of a vector per record and stage.
    pub fn on_data(&mut self, conn: &Connection, rec: &DataRecord, out: &mut Vec<ProtocolEvent>) {
        if conn.tls && rec.source != Source::Tls {
            // Ciphertext the TLS library moved outside the calls kspan
            // hooks (handshake, alerts, session tickets).
            return;
        }
        if !self.sessions.contains_key(&conn.id) && self.sessions.len() >= self.capacity {
            self.stats.sessions_over_capacity += 1;
            return;
        }
        let session = self.sessions.entry(conn.id).or_insert_with(|| Session::Detecting(Detecting::default()));
        let mut held = Vec::new();
        if let Session::Detecting(detecting) = session {
            match detecting.detect(conn, rec) {
                Some((parser, role, used)) => {
                    match parser {
                        Parser::Http1(_) => self.stats.sessions_http1 += 1,
                        Parser::Http2(_) => self.stats.sessions_http2 += 1,
                        Parser::Db(..) => self.stats.sessions_db += 1,
                    }
                    held = used;
                    *session = Session::Parsing { parser, role };
                }
                None if detecting.seen >= if conn.mid_stream { MID_STREAM_PATIENCE } else { PATIENCE } => {
                    self.stats.sessions_ignored += 1;
                    *session = Session::Ignored;
                }
                None => detecting.seen += 1,
            }
        }
        let Session::Parsing { parser, role } = session else {
            return;
        };
        let role = *role;
        let chunk = Chunk { data: rec.payload, size: rec.size, enter_ns: rec.enter_ns, exit_ns: rec.exit_ns };
        let mut broken = false;
        for h in &held {
            let chunk = h.chunk();
            self.stats.bytes_parsed += chunk.data.len() as u64;
            broken = broken || feed(parser, role, conn, h.direction, h.tid, &chunk, out);
        }
        self.stats.bytes_parsed += rec.payload.len() as u64;
        if broken || feed(parser, role, conn, rec.direction, rec.tid, &chunk, out) {
            *session = Session::Ignored;
        }
    }

    /// Forgets what the connection's bytes were so far: the next record
    /// starts protocol detection afresh (TLS plaintext after the handshake).
    pub fn restart(&mut self, conn_id: u64) {
        self.sessions.remove(&conn_id);
    }

    /// The connection ended: requests still waiting come out as errors.
    pub fn on_close(&mut self, conn: &Connection, ts_ns: u64, tid: u32, reset: bool) -> Vec<ProtocolEvent> {
        let Some(Session::Parsing { parser, role }) = self.sessions.remove(&conn.id) else {
            return Vec::new();
        };
        let events: Vec<AppEvent> = match parser {
            Parser::Http1(mut p) => p.on_close(ts_ns, reset).into_iter().map(AppEvent::Http1).collect(),
            Parser::Http2(mut p) => p.on_close(ts_ns, reset).into_iter().map(AppEvent::Http2).collect(),
            Parser::Db(system, mut p) => {
                p.on_close(ts_ns, reset).into_iter().map(|e| AppEvent::Db(system, e)).collect()
            }
        };
        events.into_iter().map(|event| ProtocolEvent { pid: conn.pid, tid, role, event }).collect()
    }
}

/// Gives `chunk` to the parser; whether the parser lost its footing.
fn feed(
    parser: &mut Parser,
    role: Role,
    conn: &Connection,
    direction: Direction,
    tid: u32,
    chunk: &Chunk<'_>,
    out: &mut Vec<ProtocolEvent>,
) -> bool {
    // Client-to-server bytes: what a client writes or a server reads.
    let from_client = (role == Role::Client) == (direction == Direction::Egress);
    let tag = |event| ProtocolEvent { pid: conn.pid, tid, role, event };
    match parser {
        Parser::Http1(p) => {
            let ev = if from_client { p.on_request_bytes(chunk) } else { p.on_response_bytes(chunk) };
            out.extend(ev.into_iter().map(|e| tag(AppEvent::Http1(e))));
            p.is_broken()
        }
        Parser::Http2(p) => {
            let ev = if from_client { p.on_client_bytes(chunk) } else { p.on_server_bytes(chunk) };
            out.extend(ev.into_iter().map(|e| tag(AppEvent::Http2(e))));
            p.is_broken()
        }
        Parser::Db(system, p) => {
            let ev = if from_client { p.on_client_bytes(chunk) } else { p.on_server_bytes(chunk) };
            let system = *system;
            out.extend(ev.into_iter().map(|e| tag(AppEvent::Db(system, e))));
            p.is_broken()
        }
    }
}

#[cfg(test)]
mod tests;
