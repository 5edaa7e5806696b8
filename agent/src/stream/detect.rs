//! Recognising a connection's protocol from its first bytes.
//!
//! A message's first bytes may come in several reads: MySQL Connector/Python
//! reads a packet's 4-byte header, then its body, so no single read holds
//! the server's greeting. The latest run of small records in one direction
//! is kept while the protocol is unknown, detection also looks at it joined
//! to the new record, and the parser then gets the records it used.

use kspan_common::{Direction, Role};

use super::Parser;
use crate::{
    capture::decode::DataRecord,
    conntrack::Connection,
    protocol::{
        db::DbSystem,
        http1::{self, Chunk, Http1Session},
        http2::{self, Http2Session},
        mysql, postgres, redis,
    },
};

/// Bytes of a run kept for detection: a split header is a few bytes and a
/// MySQL greeting about a hundred; bigger records start no split message.
const HOLD_MAX_BYTES: usize = 512;

/// A record kept while the protocol is unknown.
pub(super) struct Held {
    pub direction: Direction,
    pub tid: u32,
    data: Vec<u8>,
    enter_ns: u64,
    exit_ns: u64,
}

impl Held {
    pub fn chunk(&self) -> Chunk<'_> {
        Chunk { data: &self.data, size: self.data.len() as u64, enter_ns: self.enter_ns, exit_ns: self.exit_ns }
    }
}

/// A connection whose protocol is not known yet.
#[derive(Default)]
pub(super) struct Detecting {
    /// Records seen so far.
    pub seen: u8,
    /// Contiguous small records of one direction, oldest first.
    run: Vec<Held>,
}

impl Detecting {
    /// The parser for the connection's protocol once `rec`, alone or after
    /// some of the held run, shows it; with the held records the parser must
    /// be given before `rec`.
    pub fn detect(&mut self, conn: &Connection, rec: &DataRecord) -> Option<(Parser, Role, Vec<Held>)> {
        if let Some((parser, role)) = detect(conn, rec.direction, rec.payload) {
            self.run.clear();
            return Some((parser, role, Vec::new()));
        }
        if self.run.first().is_some_and(|held| held.direction != rec.direction) {
            self.run.clear();
        }
        let mut joined = Vec::new();
        for start in 0..self.run.len() {
            joined.clear();
            for held in &self.run[start..] {
                joined.extend_from_slice(&held.data);
            }
            joined.extend_from_slice(rec.payload);
            if let Some((parser, role)) = detect(conn, rec.direction, &joined) {
                let used = self.run.split_off(start);
                self.run.clear();
                return Some((parser, role, used));
            }
        }
        self.hold(rec);
        None
    }

    fn hold(&mut self, rec: &DataRecord) {
        if rec.payload.is_empty() {
            return;
        }
        let held_bytes: usize = self.run.iter().map(|held| held.data.len()).sum();
        // Only whole records join a run: a run must be the stream's bytes
        // without a gap.
        if rec.truncated || rec.payload.len() as u64 != rec.size || held_bytes + rec.payload.len() > HOLD_MAX_BYTES {
            self.run.clear();
            return;
        }
        self.run.push(Held {
            direction: rec.direction,
            tid: rec.tid,
            data: rec.payload.to_vec(),
            enter_ns: rec.enter_ns,
            exit_ns: rec.exit_ns,
        });
    }
}

/// Recognises the protocol from a connection's bytes and settles its role:
/// the side that sends a request line, the HTTP/2 preface, a database
/// startup message or command is the client, and the side that sends a
/// MySQL greeting is the server, whatever the kernel saw.
fn detect(conn: &Connection, direction: Direction, data: &[u8]) -> Option<(Parser, Role)> {
    let sender = if direction == Direction::Egress { Role::Client } else { Role::Server };
    let receiver = if direction == Direction::Egress { Role::Server } else { Role::Client };
    if http2::looks_like_preface(data) {
        return Some((Parser::Http2(Box::new(Http2Session::new(false))), sender));
    }
    if http1::looks_like_request(data) {
        return Some((Parser::Http1(Box::new(Http1Session::new())), sender));
    }
    if postgres::looks_like_startup(data) {
        return Some((Parser::db(DbSystem::Postgresql, false), sender));
    }
    if mysql::looks_like_server_greeting(data) {
        return Some((Parser::db(DbSystem::Mysql, false), receiver));
    }
    if redis::looks_like_command(data) {
        return Some((Parser::db(DbSystem::Redis, conn.mid_stream), sender));
    }
    if !conn.mid_stream {
        return None;
    }
    if http1::looks_like_response(data) {
        // Joined between request and response: parse from here on; the
        // parser drops responses that have no request.
        return Some((Parser::Http1(Box::new(Http1Session::new())), receiver));
    }
    // A connection that predates kspan, already past its preface: frames
    // only tell HTTP/2 apart when procfs settled which side is which.
    if conn.role != Role::Unknown && http2::looks_like_frames(data) {
        return Some((Parser::Http2(Box::new(Http2Session::new(true))), conn.role));
    }
    // Database connections met mid-stream: only the client's messages have
    // shapes strict enough to tell the protocol (replies are too generic).
    if postgres::looks_like_client_messages(data) {
        return Some((Parser::db(DbSystem::Postgresql, true), sender));
    }
    if mysql::looks_like_client_command(data) {
        return Some((Parser::db(DbSystem::Mysql, true), sender));
    }
    None
}
