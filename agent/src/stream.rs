//! Stream reassembly and protocol dispatch: the bytes of each connection,
//! in syscall order, go to the parser that recognised them.

use std::collections::HashMap;

use kspan_common::{Direction, Role};

use crate::{
    capture::decode::DataRecord,
    conntrack::Connection,
    protocol::http1::{self, Chunk, Http1Event, Http1Session},
};

/// A parser's output, tagged with where it happened.
#[derive(Debug)]
pub struct ProtocolEvent {
    pub conn_id: u64,
    pub pid: u32,
    /// Thread that did the I/O (for in-process linking).
    pub tid: u32,
    /// Role the connection turned out to have (detection may fix an
    /// unknown one).
    pub role: Role,
    pub event: Http1Event,
}

/// How many chunks a mid-stream connection may show before we give up
/// recognising it: the first bytes we see may be the middle of a body.
const MID_STREAM_PATIENCE: u8 = 8;

enum Session {
    Detecting { seen: u8 },
    Http1 { parser: Box<Http1Session>, role: Role },
    /// Not a protocol we parse: its bytes are dropped without a look.
    Ignored,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct StreamStats {
    pub sessions_http1: u64,
    pub sessions_ignored: u64,
    pub sessions_evicted: u64,
    pub bytes_parsed: u64,
}

pub struct Streams {
    sessions: HashMap<u64, Session>,
    capacity: usize,
    pub stats: StreamStats,
}

impl Streams {
    /// `capacity` bounds the sessions kept; past it new connections are not
    /// parsed (counted) rather than growing memory.
    pub fn new(capacity: usize) -> Self {
        Self { sessions: HashMap::new(), capacity, stats: StreamStats::default() }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn on_data(&mut self, conn: &Connection, rec: &DataRecord) -> Vec<ProtocolEvent> {
        if !self.sessions.contains_key(&conn.id) && self.sessions.len() >= self.capacity {
            self.stats.sessions_evicted += 1;
            return Vec::new();
        }
        let session = self.sessions.entry(conn.id).or_insert(Session::Detecting { seen: 0 });
        if let Session::Detecting { seen } = session {
            match detect(conn, rec) {
                Some(role) => {
                    self.stats.sessions_http1 += 1;
                    *session = Session::Http1 { parser: Box::new(Http1Session::new()), role };
                }
                None if !conn.mid_stream || *seen >= MID_STREAM_PATIENCE => {
                    self.stats.sessions_ignored += 1;
                    *session = Session::Ignored;
                }
                None => *seen += 1,
            }
        }
        let Session::Http1 { parser, role } = session else {
            return Vec::new();
        };
        let role = *role;
        self.stats.bytes_parsed += rec.payload.len() as u64;
        let chunk = Chunk { data: &rec.payload, size: rec.size, enter_ns: rec.enter_ns, exit_ns: rec.exit_ns };
        let carries_requests = (role == Role::Client) == (rec.direction == Direction::Egress);
        let events =
            if carries_requests { parser.on_request_bytes(&chunk) } else { parser.on_response_bytes(&chunk) };
        if parser.is_broken() {
            *session = Session::Ignored;
        }
        events
            .into_iter()
            .map(|event| ProtocolEvent { conn_id: conn.id, pid: conn.pid, tid: rec.tid, role, event })
            .collect()
    }

    /// The connection ended: requests still waiting come out as errors.
    pub fn on_close(&mut self, conn: &Connection, ts_ns: u64, tid: u32, reset: bool) -> Vec<ProtocolEvent> {
        match self.sessions.remove(&conn.id) {
            Some(Session::Http1 { mut parser, role }) => parser
                .on_close(ts_ns, reset)
                .into_iter()
                .map(|event| ProtocolEvent { conn_id: conn.id, pid: conn.pid, tid, role, event })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Recognises HTTP/1 from a connection's bytes and settles its role: the
/// side that sends a request line is the client, whatever the kernel saw.
fn detect(conn: &Connection, rec: &DataRecord) -> Option<Role> {
    let data = &rec.payload[..];
    let sender_role = if rec.direction == Direction::Egress { Role::Client } else { Role::Server };
    let receiver_role = if rec.direction == Direction::Egress { Role::Server } else { Role::Client };
    if http1::looks_like_request(data) {
        return Some(sender_role);
    }
    if http1::looks_like_response(data) && conn.mid_stream {
        // Joined between request and response: parse from here on; the
        // parser drops responses that have no request.
        return Some(receiver_role);
    }
    None
}
