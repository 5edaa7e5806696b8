//! Redis (RESP2 and RESP3) on captured socket bytes: each client command
//! becomes one [`DbExchange`](super::db::DbExchange), paired FIFO with its
//! reply, so pipelines of any depth work. Commands are RESP arrays of bulk
//! strings or inline lines (`PING\r\n`, split on blanks, Redis's quoting
//! not followed); replies are any RESP2/RESP3 value (`|` attributes are
//! skipped to the value they annotate).
//!
//! Nothing is buffered but header lines and the few arguments shown: bulk
//! strings are walked by their length, which also lets a capture gap
//! inside one (a 1 MB `SET` of which 4 KiB were copied) be skipped exactly;
//! aggregates are counted down on a stack at most [`MAX_DEPTH`] deep, so no
//! length field allocates anything. A gap the framing cannot account for
//! loses that direction's sync. The client side then resynchronises on the
//! next chunk that starts like a command ([`looks_like_command`]); the
//! command cut short is reported `Truncated`. The server side gives up the
//! replies in flight (`Truncated`) and takes the first server chunk that
//! starts with a RESP type byte, once a newer command has started, as a
//! reply boundary. Replies nothing waits for are dropped. Commands hidden
//! in a client gap cannot be counted: with a pipelining client their
//! replies may then be paired with later commands.
//!
//! What is shown (`query_text`): the command name (with the subcommand of
//! container commands: `CONFIG GET`, `CLIENT SETNAME`, `XINFO STREAM`),
//! then per argument either the argument itself, when it is a key, a
//! channel or a server-defined name (`CONFIG GET maxmemory`, `SELECT 1`),
//! or `?`. Every key of a multi-key command is kept (`MGET k1 k2`, `DEL a
//! b`), values are not (`MSET k1 ? k2 ?`, `BLPOP q1 q2 ?`). Commands not in
//! the table have all their arguments masked (`ECHO ?`, `JSON.SET ? ? ?`).
//! Credentials never leave the parser, nor are they copied: `AUTH ?`
//! whatever its arguments, `HELLO 3 ? ? ? ? ?`, `MIGRATE ? ? ...`, `CONFIG
//! SET requirepass ?`, `ACL SETUSER ? ?`; `EVAL ? 1 key ?` masks the script
//! and its values. `user` comes from a successful `AUTH user pass` or
//! `HELLO .. AUTH user pass` (`default` for `AUTH pass`).
//!
//! `rows` is the element count of an array or set reply (pairs for a map),
//! none for scalars, nulls and Pub/Sub confirmations. `namespace` is the
//! database index: `"0"` from the connection's start, changed by a
//! non-error reply to `SELECT n` (that exchange already reports `n`; a
//! `SELECT` queued in `MULTI` counts when queued) or `RESET`; none on a
//! connection joined mid-stream until a `SELECT`.
//!
//! Pub/Sub: a `SUBSCRIBE`-family command is answered by its first
//! confirmation; the confirmations for its other channels and every
//! published message (`message`, `pmessage`, `smessage`, any RESP3 `>`
//! push) are out of band and make no exchange. In RESP2, arrays are read
//! as Pub/Sub traffic only while the connection is subscribed (from a
//! `subscribe` confirmation until an unsubscribe confirmation reports zero
//! subscriptions) or was joined mid-stream and has not shown otherwise.
//! `MULTI`/`EXEC`: one exchange per command (`+QUEUED`), `EXEC` gets the
//! array. `MONITOR`'s feed lines are no replies; `CLIENT REPLY OFF|SKIP`
//! commands get exchanges without a response; `RESET` restores the
//! defaults. `PSYNC`/`SYNC` turn the connection into a replication link,
//! which is not followed: the session ends its exchanges and reports
//! [`DbSession::is_broken`](super::db::DbSession::is_broken).

mod command;
mod detect;
mod line;
mod reply;
mod request;
mod session;
mod table;
#[cfg(test)]
mod tests;

pub use detect::looks_like_command;
pub use session::RedisSession;

/// Deepest aggregate nesting accepted in a reply; deeper is a protocol
/// error (Redis itself never nests more than a few levels).
pub const MAX_DEPTH: usize = 64;

/// Most arguments in one command, Redis's own limit
/// (`*1048577\r\n` is refused by the server too).
pub const MAX_ARGS: u64 = 1024 * 1024;
