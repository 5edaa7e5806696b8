//! Backend messages: results go to the oldest waiting command; lost framing
//! is recovered at a chunk that starts a message or at a `ReadyForQuery`.

use super::super::framing::Side;
use super::super::messages;
use super::super::probe::{find_ready, plausible, result_before};
use super::{Core, Kind, Unit};
use crate::protocol::db::{DbError, DbEvent};
use crate::protocol::http1::Ts;

/// How a result ended.
enum End {
    /// CommandComplete, with the count its tag reports.
    Complete(Option<u64>),
    /// EmptyQueryResponse.
    Empty,
    /// PortalSuspended: the row limit was reached.
    Suspended,
}

impl Core {
    /// The command the next result belongs to.
    fn current(&mut self) -> Option<&mut Unit> {
        self.pending.front_mut().filter(|u| u.kind != Kind::Sync)
    }

    pub(super) fn server_message(&mut self, tag: u8, body: &[u8], first: Ts, last: Ts, out: &mut Vec<DbEvent>) {
        self.server_seen = true;
        match tag {
            b'Z' => self.ready(first, last, out),
            b'C' => self.result_end(End::Complete(messages::tag_rows(body)), first, last, out),
            b'I' => self.result_end(End::Empty, first, last, out),
            b's' => self.result_end(End::Suspended, first, last, out),
            b'E' => self.error(messages::error(body), first, last, out),
            b'D' => {
                if let Some(u) = self.current() {
                    u.touch(first, last);
                    u.data_rows = u.data_rows.saturating_add(1);
                }
            }
            // Parse/Bind/Close complete, descriptions, copy responses and data.
            b'1' | b'2' | b'3' | b't' | b'T' | b'n' | b'G' | b'H' | b'W' | b'd' | b'c' => {
                if let Some(u) = self.current() {
                    u.touch(first, last);
                }
            }
            // Authentication, parameter status, key data, notices,
            // notifications, version negotiation, function results: they
            // never end a command's result.
            _ => {}
        }
    }

    fn result_end(&mut self, end: End, first: Ts, last: Ts, out: &mut Vec<DbEvent>) {
        let Some(u) = self.current() else { return };
        u.touch(first, last);
        let rows = match end {
            End::Complete(n) => n.or((u.data_rows > 0).then_some(u.data_rows)),
            End::Empty => None,
            End::Suspended => Some(u.data_rows),
        };
        u.data_rows = 0;
        match u.kind {
            // A multi-statement Query sums its statements' counts.
            Kind::Query => {
                if let Some(n) = rows {
                    u.rows = Some(u.rows.unwrap_or(0).saturating_add(n));
                }
            }
            _ => {
                u.rows = rows;
                u.done = true;
                self.drain(out);
            }
        }
    }

    fn error(&mut self, err: DbError, first: Ts, last: Ts, out: &mut Vec<DbEvent>) {
        let Some(u) = self.current() else {
            // An error for an Execute-less batch (a bad Parse), at startup,
            // or a FATAL notice with nothing waiting.
            return;
        };
        u.touch(first, last);
        u.data_rows = 0;
        if u.kind == Kind::Query {
            // Later statements of the string do not run; the first error
            // is the one.
            u.error.get_or_insert(err);
            return;
        }
        u.error = Some(err.clone());
        u.done = true;
        // The server now skips to Sync: the batch's other Executes fail.
        let mut synced = false;
        for later in self.pending.iter_mut().skip(1) {
            if later.kind != Kind::Execute {
                synced = true;
                break;
            }
            later.touch(first, last);
            later.error = Some(err.clone());
            later.done = true;
        }
        if !synced {
            self.batch_error = Some(err);
        }
        self.drain(out);
    }

    /// `ReadyForQuery`: ends the oldest Query or Sync and every Execute
    /// before it (one still without a result lost it to the capture).
    fn ready(&mut self, first: Ts, last: Ts, out: &mut Vec<DbEvent>) {
        for u in self.pending.iter_mut() {
            match u.kind {
                Kind::Execute => {
                    u.truncated |= u.error.is_none();
                    u.done = true;
                }
                Kind::Query | Kind::Sync => {
                    if u.kind == Kind::Query {
                        u.touch(first, last);
                    }
                    u.done = true;
                    break;
                }
            }
        }
        self.drain(out);
    }

    /// Bytes that start no message.
    pub(super) fn server_invalid(&mut self, ts: Ts) {
        if self.server_seen {
            self.server_lost_framing(ts);
        } else {
            self.broken = true;
        }
    }

    /// A gap ran past a message end (or bytes made no sense): the results
    /// of the batch in progress may have gone by unseen.
    pub(super) fn server_lost_framing(&mut self, ts: Ts) {
        self.server_lost = true;
        for u in self.pending.iter_mut() {
            u.after_loss = false;
        }
        for u in self.pending.iter_mut() {
            u.truncated = true;
            if u.kind != Kind::Sync {
                u.touch(ts, ts);
            }
            if u.kind != Kind::Execute {
                break;
            }
        }
    }

    /// Where framing restarts in a chunk after it was lost: the chunk's
    /// start if it starts a message, else right after a `ReadyForQuery`
    /// found in it (whose result, if whole, is read first). `None`: not in
    /// this chunk.
    pub(super) fn server_resync<'a>(&mut self, data: &'a [u8], ts: Ts, out: &mut Vec<DbEvent>) -> Option<&'a [u8]> {
        if plausible(Side::Backend, data) {
            self.server_lost = false;
            self.settle_lost(out);
            return Some(data);
        }
        if let Some(z) = find_ready(data) {
            self.server_lost = false;
            if let Some(p) = result_before(data, z)
                && let (Some(&tag), Some(body)) = (data.get(p), data.get(p + 5..z))
            {
                self.server_message(tag, body, ts, ts, out);
            }
            self.server_message(b'Z', data.get(z + 5..z + 6).unwrap_or_default(), ts, ts, out);
            return Some(data.get(z + 6..).unwrap_or_default());
        }
        if Self::probe_failed(self.server_seen, &mut self.server_probes) {
            self.broken = true;
        }
        if let Some(u) = self.current() {
            u.response_last = Some(ts);
        }
        None
    }

    /// Framing is back at a message start. If the client sent commands
    /// since framing was lost, the end of the older batch went by unseen
    /// (a client waits for it before sending more, unless pipelining): that
    /// batch is over.
    fn settle_lost(&mut self, out: &mut Vec<DbEvent>) {
        if !self.pending.iter().any(|u| u.after_loss) {
            return;
        }
        for u in self.pending.iter_mut() {
            if u.after_loss {
                break;
            }
            u.truncated = true;
            u.done = true;
            if u.kind != Kind::Execute {
                break;
            }
        }
        self.drain(out);
    }

    /// A cut message ends the current result: it is incomplete.
    pub(super) fn mark_current_truncated(&mut self) {
        if let Some(u) = self.current() {
            u.truncated = true;
        }
    }
}
