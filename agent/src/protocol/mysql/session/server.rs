//! The server side of a connection: handshake replies, command replies
//! paired with the oldest command waiting, and what a server gap costs.

use super::super::commands::Effect;
use super::super::framing::Message;
use super::super::packets::{greeting_caps, ok_packet};
use super::super::reply::{EOF_LEN, Step};
use super::super::{ends_with_terminator, looks_like_reply_start};
use super::{Conn, Pending, Phase, ts_of};
use crate::protocol::db::{DbEvent, DbFailure};
use crate::protocol::http1::Chunk;

impl Conn {
    pub(super) fn on_server_message(&mut self, m: &Message) {
        if self.lose_server {
            return;
        }
        let first = m.head.first().copied();
        match self.phase {
            Phase::Greeting => match first {
                Some(10) => {
                    self.server_caps = greeting_caps(m.head);
                    self.phase = Phase::Response;
                }
                // Refused before the handshake (too many connections...).
                Some(0xff) => self.phase = Phase::Closed,
                _ => self.broken = true,
            },
            Phase::Response | Phase::Closed => {}
            Phase::Auth => match first {
                Some(0x00) => {
                    if let Some(schema) = ok_packet(m.head, self.env.caps).and_then(|ok| ok.schema) {
                        self.namespace = Some(schema);
                    }
                    self.phase = Phase::Command;
                }
                Some(0xff) => self.phase = Phase::Closed,
                _ => {}
            },
            Phase::Command => self.reply(m, first),
        }
    }

    pub(super) fn reply(&mut self, m: &Message, first: Option<u8>) {
        if let Some(seq) = self.env.swallow_eof.take() {
            if m.seq == seq && first == Some(0xfe) && m.len == EOF_LEN {
                self.env.deprecate_eof = Some(false);
                return;
            }
            self.env.deprecate_eof.get_or_insert(true);
        }
        let Some(p) = self.queue.front_mut() else { return };
        if !p.replying {
            // Not the reply to this command (e.g. to one a gap hid).
            if m.seq != p.expect_seq {
                return;
            }
            p.replying = true;
            p.ex.response_first = Some(m.first);
        }
        p.ex.response_last = Some(m.last);
        if m.truncated {
            p.ex.failure = Some(DbFailure::Truncated);
        }
        if p.reply.step(m, &mut self.env) == Step::Done
            && let Some(p) = self.queue.pop_front()
        {
            self.finish(p);
        }
    }

    pub(super) fn finish(&mut self, mut p: Pending) {
        self.env.upload = false;
        if p.reply.error.is_none() {
            match std::mem::take(&mut p.effect) {
                Effect::None => {}
                Effect::SetNamespace(db) => {
                    p.ex.namespace = Some(db.clone());
                    self.namespace = Some(db);
                }
                Effect::ChangeUser { user, database } => {
                    p.ex.user.clone_from(&user);
                    p.ex.namespace.clone_from(&database);
                    self.user = user;
                    self.namespace = database;
                }
                Effect::Prepare(statement) => {
                    if let Some(id) = p.reply.statement_id {
                        self.statements.insert(id, statement);
                    }
                }
            }
        }
        if let Some(schema) = p.reply.schema.take() {
            p.ex.namespace = Some(schema.clone());
            self.namespace = Some(schema);
        }
        self.emit(p);
    }

    pub(super) fn emit(&mut self, mut p: Pending) {
        p.ex.rows = p.reply.rows;
        p.ex.error = p.reply.error.take();
        self.out.push(DbEvent::Exchange(p.ex));
    }

    pub(super) fn on_server_lost(&mut self) {
        for p in &mut self.queue {
            p.lost = true;
            p.ex.failure = Some(DbFailure::Truncated);
        }
        self.env.swallow_eof = None;
        if matches!(self.phase, Phase::Greeting | Phase::Response | Phase::Auth) {
            self.phase = Phase::Command;
        }
    }

    /// Commands whose replies a gap hid are reported once the client has
    /// moved on to a new command.
    pub(super) fn flush_lost(&mut self) {
        while self.queue.front().is_some_and(|p| p.lost) {
            if let Some(p) = self.queue.pop_front() {
                self.emit(p);
            }
        }
    }

    pub(super) fn can_resync_server(&self, data: &[u8]) -> bool {
        self.phase == Phase::Command
            && self.queue.front().is_some_and(|p| !p.lost && !p.replying && looks_like_reply_start(data, p.expect_seq))
    }

    /// A server chunk while the server stream is lost. Returns whether it
    /// ended exactly at the end of the lone lost command's reply, so the
    /// stream is back on a packet boundary.
    pub(super) fn server_dropped(&mut self, chunk: &Chunk) -> bool {
        if self.queue.front().is_some_and(|p| !p.lost) {
            // The server spoke, but not like the start of the reply awaited:
            // that start was missed, so pairing is unknown until the client
            // moves on.
            self.on_server_lost();
        }
        let Some(p) = self.queue.front_mut() else { return false };
        p.ex.response_last = Some(ts_of(chunk));
        let whole = chunk.size <= chunk.data.len() as u64;
        if whole && self.queue.len() == 1 && ends_with_terminator(chunk.data) {
            self.flush_lost();
            return true;
        }
        false
    }
}
