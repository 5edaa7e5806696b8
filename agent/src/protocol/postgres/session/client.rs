//! Frontend messages: the startup, simple queries, and the extended
//! protocol's Parse/Bind/Execute/Sync that build one exchange per Execute.

use super::super::framing::{Message, Side};
use super::super::messages::{self, Untyped};
use super::super::probe::plausible;
use super::{Core, Kind, statement};
use crate::protocol::db::DbEvent;
use crate::protocol::http1::Ts;

impl Core {
    pub(super) fn client_message(&mut self, m: Message<'_>, out: &mut Vec<DbEvent>) {
        self.client_seen = true;
        match m.tag {
            0 => self.untyped(m.body),
            b'Q' => {
                // A Query ends any unfinished extended-protocol unit.
                self.unit_first = None;
                self.unit_statement = None;
                let stmt = statement(messages::query(m.body), m.cut);
                self.push(Kind::Query, Some(stmt), m.first, m.last, m.cut, out);
            }
            b'P' => {
                let (name, sql) = messages::parse(m.body);
                let stmt = Some(statement(sql, m.cut));
                self.statements.insert(name, stmt.clone());
                self.unit_statement = stmt;
                self.unit_first.get_or_insert(m.first);
            }
            b'B' => {
                let stmt = match messages::bind(m.body) {
                    Some((portal, name)) => {
                        let stmt = self.statements.get(name);
                        self.portals.insert(portal, stmt.clone());
                        stmt
                    }
                    // Names cut by a gap: the portal is most likely the
                    // unnamed one, whose old statement must not be reused.
                    None => {
                        self.portals.insert(b"", None);
                        None
                    }
                };
                self.unit_statement = stmt;
                self.unit_first.get_or_insert(m.first);
            }
            b'E' => {
                let stmt = messages::execute(m.body).and_then(|portal| self.portals.get(portal));
                let first = self.unit_first.take().unwrap_or(m.first);
                self.unit_statement = None;
                self.push(Kind::Execute, stmt, first, m.last, m.cut, out);
                if let Some(err) = self.batch_error.clone()
                    && let Some(u) = self.pending.back_mut()
                {
                    u.error = Some(err);
                    u.done = true;
                    self.drain(out);
                }
            }
            b'C' => match messages::target(m.body) {
                Some((b'S', name)) => self.statements.remove(name),
                Some((b'P', name)) => self.portals.remove(name),
                _ => {}
            },
            b'S' => {
                self.unit_first = None;
                self.unit_statement = None;
                self.batch_error = None;
                self.push(Kind::Sync, None, m.first, m.last, false, out);
            }
            // A fast-path function call: answered like a Sync, no exchange.
            b'F' => self.push(Kind::Sync, None, m.first, m.last, false, out),
            // Terminate comes once the client has its results: those the
            // capture lost (server framing lost) will not come.
            b'X' if self.server_lost => {
                for u in self.pending.iter_mut() {
                    u.truncated = true;
                    u.done = true;
                }
                self.drain(out);
            }
            // Describe, Flush, Terminate, copy data and passwords.
            _ => {}
        }
    }

    fn untyped(&mut self, body: &[u8]) {
        match messages::untyped(body) {
            Untyped::Startup { user, database } => {
                // The server's default database is the user's name.
                self.namespace = database.or_else(|| user.clone());
                self.user = user;
                self.startup = false;
            }
            Untyped::SslRequest | Untyped::GssEncRequest => self.negotiation = true,
            Untyped::Cancel => {}
            Untyped::Unknown => self.broken = true,
        }
    }

    /// Bytes that start no message.
    pub(super) fn client_invalid(&mut self) {
        if self.startup || !self.client_seen {
            // TLS without a request, an old protocol, or not PostgreSQL.
            self.broken = true;
        } else {
            self.client_lost = true;
        }
    }

    /// A gap ran past the end of a message: later client messages are
    /// unknown. An Execute whose Parse/Bind was seen was most likely sent
    /// with them in the same write, so it is assumed (and marked
    /// truncated) to keep the pairing of the server's results.
    pub(super) fn client_lost_framing(&mut self, ts: Ts, out: &mut Vec<DbEvent>) {
        if self.startup {
            self.broken = true;
            return;
        }
        self.client_lost = true;
        if let Some(first) = self.unit_first.take() {
            let stmt = self.unit_statement.take();
            self.push(Kind::Execute, stmt, first, ts, true, out);
        }
    }

    /// Whether framing can restart at this chunk.
    pub(super) fn client_resync(&mut self, data: &[u8]) -> bool {
        if plausible(Side::Frontend, data) {
            self.client_lost = false;
            return true;
        }
        if Self::probe_failed(self.client_seen, &mut self.client_probes) {
            self.broken = true;
        }
        false
    }
}
