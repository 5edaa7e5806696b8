//! MySQL / MariaDB client-server protocol on captured socket bytes: one
//! [`DbExchange`](crate::protocol::db::DbExchange) per client command,
//! paired with its reply in order (pipelined commands work).
//!
//! What is reported:
//! - The handshake gives no exchange: it yields the user and the initial
//!   schema (`CLIENT_CONNECT_WITH_DB`), and the capability flags. The auth
//!   response and every later authentication packet are stepped over, never
//!   kept (buffered client bytes are zeroed before reuse).
//! - `COM_QUERY`: operation, table and sanitised text from
//!   [`summarize_mysql`](crate::protocol::sql::summarize_mysql); `rows` adds
//!   up rows of every result set and affected rows of every OK (multi-results
//!   belong to the one command). A `USE db` query that succeeds sets the
//!   namespace, as does any schema change the server reports through
//!   session-state tracking.
//! - `COM_INIT_DB`: operation `USE`, namespace the new schema.
//! - `COM_STMT_PREPARE`: operation `PREPARE`, with the statement's table and
//!   text; the statement id from PREPARE_OK is remembered (256 per
//!   connection, oldest forgotten first). `COM_STMT_EXECUTE` then reports the
//!   statement's operation, table and text (`EXECUTE` alone when the prepare
//!   was not seen); `COM_STMT_FETCH` (cursor rows) reports `FETCH` with the
//!   statement's table and text; `COM_STMT_RESET` reports `STMT_RESET`.
//! - `COM_PING` `PING`, `COM_FIELD_LIST` `FIELD_LIST` (table as collection),
//!   `COM_CHANGE_USER` `CHANGE_USER` (new user and schema on success),
//!   `COM_RESET_CONNECTION`, `COM_STATISTICS`, `COM_PROCESS_INFO` by name;
//!   other commands as `COM_0xNN`.
//! - No exchange: `COM_QUIT`, `COM_STMT_CLOSE`, `COM_STMT_SEND_LONG_DATA`
//!   (no reply exists).
//! - ERR: `error.code` is the error number in decimal (`1146`), the message
//!   follows the SQLSTATE marker. MariaDB progress reports (ERR 0xffff) are
//!   skipped. LOCAL INFILE: the file the client sends is skipped; the
//!   server's final OK/ERR ends the exchange.
//!
//! Events: `Started` is emitted once the command packet is complete (for a
//! command written in one syscall, while handling the chunk of its first
//! byte); its `first` is always the syscall that carried the first byte.
//! The exchange's `namespace` is the schema in effect for the command; for
//! `COM_INIT_DB`, `USE` and `COM_CHANGE_USER` it is the new one when they
//! succeed.
//!
//! Joined mid-stream (`new(true)`): client bytes are skipped until a chunk
//! starts like a command and server bytes until one starts like its reply;
//! capabilities are then unknown, so how result sets end is learned from the
//! replies. A greeting seen first switches back to the full handshake.
//!
//! Not decoded (the session reports [`is_broken`](crate::protocol::db::DbSession::is_broken)):
//! TLS (the client sent an SSLRequest), the compressed protocol
//! (`CLIENT_COMPRESS` or zstd negotiated), replication and clone streams,
//! and streams where the client keeps sending what is not a command.
//!
//! Gaps: a gap inside a packet is skipped by its length and flags the
//! exchange `Truncated`. A gap past a packet's end loses the position: on the
//! client side parsing resumes at the next chunk that starts like a command;
//! on the server side the commands in flight are flagged `Truncated` and
//! reported when the client sends its next command (or earlier, when a chunk
//! ends exactly with a result-set terminator), and parsing resumes at the
//! next chunk that starts like that command's reply. Commands a client gap
//! hides entirely are not reported; if a client pipelines past such a gap,
//! replies can pair with the wrong command.

mod commands;
mod framing;
mod packets;
mod reply;
mod session;
mod statements;
#[cfg(test)]
mod tests;

pub use session::MysqlSession;

use commands::{
    COM_INIT_DB, COM_PING, COM_QUERY, COM_QUIT, COM_RESET_CONNECTION, COM_STMT_CLOSE, COM_STMT_EXECUTE,
    COM_STMT_PREPARE, COM_STMT_RESET,
};
use packets::SERVER_MORE_RESULTS_EXISTS;

/// Bytes of SQL checked by the detection heuristics.
const SNIFF: usize = 64;

fn header(p: &[u8]) -> Option<(u32, u8, &[u8])> {
    let [a, b, c, seq, rest @ ..] = p else { return None };
    Some((u32::from_le_bytes([*a, *b, *c, 0]), *seq, rest))
}

/// Whether `prefix` (the first bytes the server sent) is a MySQL Initial
/// Handshake: a packet header with sequence id 0 and a length of 18 to 4096,
/// protocol version 10, then a server version that starts with a digit, is
/// printable ASCII and ends with a NUL visible in `prefix`.
pub fn looks_like_server_greeting(prefix: &[u8]) -> bool {
    let Some((len, seq, payload)) = header(prefix) else { return false };
    let Some((&10, rest)) = payload.split_first() else { return false };
    if seq != 0 || !(18..=4096).contains(&len) {
        return false;
    }
    let visible = rest.get(..rest.len().min(len as usize - 1)).unwrap_or_default();
    let Some(end) = visible.iter().position(|&b| b == 0) else { return false };
    let version = visible.get(..end).unwrap_or_default();
    version.first().is_some_and(u8::is_ascii_digit) && version.iter().all(|b| (0x20..0x7f).contains(b))
}

/// Whether `prefix` starts with a client command packet (sequence id 0):
/// `COM_QUERY` or `COM_STMT_PREPARE` whose text (after MySQL 8 query
/// attributes `00 01`, for `COM_QUERY`) starts with a letter, space, `(`,
/// `/`, `-` or `#` and whose first 64 visible bytes hold no control
/// characters but tab, CR and LF; `COM_STMT_EXECUTE` of at least 10 bytes
/// with a known cursor flag and an iteration count of 1 (where visible);
/// `COM_PING`, `COM_QUIT`, `COM_RESET_CONNECTION` of exactly 1 byte;
/// `COM_STMT_CLOSE`, `COM_STMT_RESET` of exactly 5; `COM_INIT_DB` with a
/// 1 to 256 byte printable name.
pub fn looks_like_client_command(prefix: &[u8]) -> bool {
    let Some((len, 0, payload)) = header(prefix) else { return false };
    let Some((&cmd, rest)) = payload.split_first() else { return false };
    let body = rest.get(..rest.len().min(len.saturating_sub(1) as usize)).unwrap_or_default();
    match cmd {
        COM_QUERY | COM_STMT_PREPARE => {
            let text = match body {
                [0, 1, text @ ..] if cmd == COM_QUERY => text,
                _ => body,
            };
            len >= 2 && plausible_sql(text)
        }
        COM_STMT_EXECUTE => {
            let flags_ok = body.get(4).is_none_or(|f| matches!(f, 0 | 1 | 2 | 4 | 8));
            let iterations = body.get(5..9).is_none_or(|i| i == [1, 0, 0, 0]);
            len >= 10 && flags_ok && iterations
        }
        COM_PING | COM_QUIT | COM_RESET_CONNECTION => len == 1,
        COM_STMT_CLOSE | COM_STMT_RESET => len == 5,
        COM_INIT_DB => (2..=257).contains(&len) && body.iter().all(|b| (0x20..0x7f).contains(b) || *b >= 0x80),
        _ => false,
    }
}

fn plausible_sql(text: &[u8]) -> bool {
    let Some(&first) = text.first() else { return false };
    let starts = first.is_ascii_alphabetic() || first.is_ascii_whitespace() || b"(/-#".contains(&first);
    let sniff = text.get(..text.len().min(SNIFF)).unwrap_or_default();
    starts && sniff.iter().all(|&b| b >= 0x20 && b != 0x7f || b"\t\r\n".contains(&b))
}

/// Whether a server chunk plausibly starts the reply whose first packet
/// carries sequence id `seq`: OK, ERR, EOF, LOCAL INFILE request, or a
/// column count (followed, when visible, by a column definition).
fn looks_like_reply_start(data: &[u8], seq: u8) -> bool {
    let Some((len, s, payload)) = header(data) else { return false };
    let Some(&first) = payload.first() else { return false };
    if s != seq || len == 0 {
        return false;
    }
    match first {
        0x00 => len >= 7,
        0xff => len >= 3,
        0xfe => len < 9,
        0xfb => true,
        0x01..=0xfa | 0xfc | 0xfd => {
            if len > 10 {
                return false;
            }
            // The first column definition starts with the catalog "def".
            match header(payload.get(len as usize..).unwrap_or_default()) {
                Some((_, next, def)) => next == seq.wrapping_add(1) && def.get(..4).is_none_or(|d| d == b"\x03def"),
                None => true,
            }
        }
    }
}

/// Whether `data` ends with a result set's last packet: an EOF, or the OK
/// (0xfe) that replaces it, without the more-results flag.
fn ends_with_terminator(data: &[u8]) -> bool {
    let last_status = |tail: &[u8], at: usize| {
        tail.get(at..at + 2).is_some_and(|s| u16::from_le_bytes([s[0], s[1]]) & SERVER_MORE_RESULTS_EXISTS == 0)
    };
    let eof = data.len() >= 9 && {
        let t = &data[data.len() - 9..];
        t[..3] == [5, 0, 0] && t[4] == 0xfe && last_status(t, 7)
    };
    let ok = data.len() >= 11 && {
        let t = &data[data.len() - 11..];
        t[..3] == [7, 0, 0] && t[4] == 0xfe && t[5] == 0 && t[6] == 0 && last_status(t, 7)
    };
    eof || ok
}
