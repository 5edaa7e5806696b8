//! What every database wire-protocol parser reports, whatever the database:
//! one [`DbExchange`] per client command, paired with its reply.
//!
//! The parsers share this shape so the stream dispatcher, the trace linker
//! and the span builder treat PostgreSQL, MySQL and Redis alike. Queries are
//! exported as metadata only: literals are replaced by `?` before a query
//! text leaves the parser (see [`super::sql`]), and credentials are never
//! kept.

use super::http1::{Chunk, Ts};

/// Which database the connection speaks (`db.system.name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbSystem {
    Postgresql,
    Mysql,
    Redis,
}

impl DbSystem {
    /// The OpenTelemetry `db.system.name` value.
    pub fn as_str(self) -> &'static str {
        match self {
            DbSystem::Postgresql => "postgresql",
            DbSystem::Mysql => "mysql",
            DbSystem::Redis => "redis",
        }
    }
}

/// A command's failure as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    /// `db.response.status_code`: SQLSTATE for PostgreSQL (`42P01`), the
    /// error number for MySQL (`1146`), the error prefix for Redis
    /// (`WRONGTYPE`, `ERR`).
    pub code: String,
    /// The server's message, cut to a bounded length. Server messages name
    /// objects, not values, so they are safe to export.
    pub message: String,
}

/// Why an exchange did not end with a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DbFailure {
    /// The connection was reset before the reply completed.
    #[error("connection reset before the reply completed")]
    ConnectionReset,
    /// The connection was closed before the reply completed.
    #[error("connection closed before the reply completed")]
    ConnectionClosed,
    /// A capture gap hid part of the exchange: fields present are real but
    /// may be incomplete.
    #[error("capture incomplete: part of the exchange was not captured")]
    Truncated,
}

/// One client command with its reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbExchange {
    /// Order of the command on this connection, from 0 (as in `Started`).
    pub seq: u64,
    /// `db.operation.name`: `SELECT`, `INSERT`, `GET`, `HSET`, `EXECUTE`...
    /// Upper case.
    pub operation: Option<String>,
    /// `db.collection.name`: the table (SQL: the first table after FROM /
    /// INTO / UPDATE / TABLE) when the parser could tell it. Redis: none.
    pub collection: Option<String>,
    /// `db.query.text`, sanitised: SQL with every literal replaced by `?`;
    /// a Redis command with its name and (for key commands) the key, every
    /// other argument as `?`. Bounded length.
    pub query_text: Option<String>,
    /// `db.namespace`: the database name (PostgreSQL startup `database`,
    /// MySQL handshake/`COM_INIT_DB`/`USE`, Redis `SELECT n` index as a
    /// string), once the parser saw it.
    pub namespace: Option<String>,
    /// The database user from the startup/handshake, when seen. Never a password.
    pub user: Option<String>,
    /// Rows the reply carried or the command affected, when the protocol says.
    pub rows: Option<u64>,
    /// The server's error reply.
    pub error: Option<DbError>,
    /// Why there is no (whole) reply.
    pub failure: Option<DbFailure>,
    /// Number of commands batched in this exchange (Redis pipelines and
    /// PostgreSQL extended-protocol batches are one exchange per command; a
    /// `MULTI`..`EXEC` block stays several). 1 for a plain command.
    pub batch_size: u32,
    /// Syscall carrying the first byte of the command.
    pub request_first: Ts,
    /// Syscall carrying the last byte of the command.
    pub request_last: Ts,
    /// Syscall carrying the first reply byte.
    pub response_first: Option<Ts>,
    /// Syscall carrying the last reply byte.
    pub response_last: Option<Ts>,
    /// Timestamp passed to `on_close` when the close ended this exchange.
    pub closed_ns: Option<u64>,
}

/// What a database parser reports, in order.
// Exchanges are the common case, not the exception: boxing them would add
// an allocation to nearly every event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbEvent {
    /// A command started (its first byte was seen). Emitted before the reply
    /// exists, so the trace linker knows a call is in flight. `seq` numbers
    /// commands on this connection from 0, the same `seq` as the exchange.
    Started { seq: u64, first: Ts },
    /// A command and its reply are done, or failed. Once per `Started`, in
    /// `seq` order.
    Exchange(DbExchange),
}

/// One connection's parser. Never panics on input; memory is bounded
/// whatever the peer sends.
pub trait DbSession {
    /// Bytes from the client (a client's write or a server's read).
    fn on_client_bytes(&mut self, chunk: &Chunk) -> Vec<DbEvent>;
    /// Bytes from the server.
    fn on_server_bytes(&mut self, chunk: &Chunk) -> Vec<DbEvent>;
    /// The connection ended: commands still waiting come out with a failure.
    fn on_close(&mut self, ts_ns: u64, reset: bool) -> Vec<DbEvent>;
    /// The stream is not this protocol after all (or hopelessly desynced):
    /// the dispatcher stops feeding it.
    fn is_broken(&self) -> bool;
}

/// Longest `db.query.text` exported; longer texts are cut on a char boundary.
pub const MAX_QUERY_TEXT: usize = 2048;
/// Longest error message kept.
pub const MAX_ERROR_MESSAGE: usize = 256;
/// Commands awaiting a reply on one connection before the oldest are
/// reported as truncated: bounds memory against a pipelining peer whose
/// replies are never captured.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Cuts `s` to at most `max` bytes on a char boundary.
pub fn truncate_text(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
