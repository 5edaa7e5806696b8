//! One connection: the client and server parsers, and the FIFO of
//! commands waiting for their replies.

use super::reply::{ReplyParser, is_type_byte};
use super::request::{Done, RequestParser, RequestSink};
use crate::protocol::db::{DbEvent, DbFailure, DbSession};
use crate::protocol::http1::{Chunk, Ts};

mod pairing;

use pairing::Core;

/// Protocol errors tolerated on a connection joined mid-stream before it is
/// declared not Redis, while no reply has been paired yet.
const MID_STREAM_ERRORS: u32 = 8;
/// Client chunks skipped while looking for a command boundary on a
/// connection joined mid-stream, before it is declared not Redis.
const MID_STREAM_SKIPS: u32 = 256;

/// Where the server direction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerSync {
    Synced,
    /// Replies were lost: the next server chunk that starts with a type
    /// byte, once a command numbered `after` or later has started, is
    /// taken as a reply boundary.
    Lost {
        after: u64,
    },
}

/// A Redis connection's parser: feed it each syscall's bytes in order, get
/// one [`DbEvent::Started`] and one [`DbEvent::Exchange`] per command.
#[derive(Debug)]
pub struct RedisSession {
    request: RequestParser,
    reply: ReplyParser,
    core: Core,
    server: ServerSync,
    mid_stream: bool,
    errors: u32,
    skips: u32,
    broken: bool,
}

impl RedisSession {
    /// A parser for a connection seen from its first byte, or, with
    /// `mid_stream`, joined at an unknown point: it then waits for a client
    /// chunk that starts like a command and drops replies nothing waits for.
    pub fn new(mid_stream: bool) -> RedisSession {
        RedisSession {
            request: RequestParser::new(mid_stream),
            reply: ReplyParser::new(),
            core: Core::new(mid_stream),
            server: if mid_stream { ServerSync::Lost { after: 0 } } else { ServerSync::Synced },
            mid_stream,
            errors: 0,
            skips: 0,
            broken: false,
        }
    }

    fn protocol_error(&mut self, ts: Ts) {
        if self.core.confirmed {
            return;
        }
        self.errors = self.errors.saturating_add(1);
        if !self.mid_stream || self.errors >= MID_STREAM_ERRORS {
            self.give_up(ts);
        }
    }

    /// Not Redis after all (or a replication link): the commands started
    /// are ended now (truncated), as the dispatcher stops feeding a broken
    /// session.
    fn give_up(&mut self, ts: Ts) {
        self.broken = true;
        let first = self.reply.in_progress();
        self.reply.reset();
        let partial = self.request.abort(ts);
        self.core.close(first, partial, DbFailure::Truncated, None);
    }

    /// Gives up the replies in flight: a gap or an error left the server
    /// direction at an unknown point.
    fn lose_server(&mut self) {
        let first = self.reply.in_progress();
        self.reply.reset();
        self.core.lose_replies(first);
        self.server = ServerSync::Lost { after: self.core.next_seq };
    }
}

fn ts(chunk: &Chunk) -> Ts {
    Ts { enter_ns: chunk.enter_ns, exit_ns: chunk.exit_ns }
}

/// Uncaptured bytes after the chunk's data.
fn gap(chunk: &Chunk) -> u64 {
    chunk.size.saturating_sub(chunk.data.len() as u64)
}

impl DbSession for RedisSession {
    fn on_client_bytes(&mut self, chunk: &Chunk) -> Vec<DbEvent> {
        if self.broken {
            return Vec::new();
        }
        let ts = ts(chunk);
        if self.request.is_lost() && !self.request.try_resync(chunk.data) {
            if !self.core.confirmed && self.mid_stream {
                self.skips = self.skips.saturating_add(1);
                if self.skips >= MID_STREAM_SKIPS {
                    self.give_up(ts);
                }
            }
            return self.core.take_events();
        }
        if self.request.feed(chunk.data, ts, &mut self.core).is_err() {
            self.protocol_error(ts);
        } else if gap(chunk) > 0 {
            self.request.gap(gap(chunk), ts, &mut self.core);
        }
        if self.core.replication && !self.broken {
            // A replica's link: an RDB file, then the master's command
            // stream. Not a client conversation; stop here.
            self.give_up(ts);
        }
        self.core.take_events()
    }

    fn on_server_bytes(&mut self, chunk: &Chunk) -> Vec<DbEvent> {
        if self.broken {
            return Vec::new();
        }
        if let ServerSync::Lost { after } = self.server {
            let boundary = chunk.data.first().is_some_and(|&b| is_type_byte(b));
            if self.core.next_seq <= after || !boundary {
                return self.core.take_events();
            }
            self.server = ServerSync::Synced;
        }
        let ts = ts(chunk);
        if self.reply.feed(chunk.data, ts, &mut self.core).is_err() {
            self.lose_server();
            self.protocol_error(ts);
        } else if gap(chunk) > 0 && !self.reply.gap(gap(chunk), ts, &mut self.core) {
            self.lose_server();
        }
        self.core.take_events()
    }

    fn on_close(&mut self, ts_ns: u64, reset: bool) -> Vec<DbEvent> {
        let failure = if reset { DbFailure::ConnectionReset } else { DbFailure::ConnectionClosed };
        let closed = Ts { enter_ns: ts_ns, exit_ns: ts_ns };
        let first = self.reply.in_progress();
        self.reply.reset();
        let partial = self.request.abort(closed);
        self.core.close(first, partial, failure, Some(ts_ns));
        self.server = ServerSync::Lost { after: u64::MAX };
        self.core.take_events()
    }

    fn is_broken(&self) -> bool {
        self.broken
    }
}

impl RequestSink for Core {
    fn started(&mut self, first: Ts) {
        self.start(first);
    }

    fn complete(&mut self, done: Done) {
        self.finish_command(done);
    }
}
