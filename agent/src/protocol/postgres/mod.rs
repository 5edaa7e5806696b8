//! PostgreSQL frontend/backend protocol (v3) on captured socket bytes: one
//! [`DbExchange`](crate::protocol::db::DbExchange) per simple `Query` and
//! per extended-protocol `Execute`, paired FIFO with the server's results.
//!
//! Every message is length-prefixed, so bodies that are not needed (rows,
//! parameter values, copy data) are counted past without buffering, and a
//! capture gap inside a message of known length is skipped exactly. A gap
//! that runs past a message end loses framing; the side then waits for a
//! chunk that starts with well-formed messages (or, on the server side, for
//! a `ReadyForQuery`), and the commands whose results may have been missed
//! are reported `Truncated`.
//!
//! Only metadata leaves the parser: SQL is sanitised by
//! [`crate::protocol::sql`], passwords (`PasswordMessage` and the SASL/GSS
//! messages sharing its type) are skipped unread, and an encrypted
//! connection (the server accepting SSL or GSS encryption) ends parsing.

mod framing;
mod messages;
mod probe;
mod reader;
mod session;
mod statements;
#[cfg(test)]
mod tests;

pub use session::PostgresSession;

use framing::Side;
use probe::plausible;

/// Whether `prefix` (a client's first captured bytes) starts like a
/// PostgreSQL connection: a StartupMessage for protocol 3.x (length 9 to
/// 10000, parameters as NUL-terminated text), or an SSLRequest /
/// GSSENCRequest (length 8) or CancelRequest (length 16) with its code.
/// Needs the first 8 bytes.
pub fn looks_like_startup(prefix: &[u8]) -> bool {
    let Some((len, rest)) = prefix.split_first_chunk::<4>() else { return false };
    let Some((code, params)) = rest.split_first_chunk::<4>() else { return false };
    let len = u32::from_be_bytes(*len);
    let code = u32::from_be_bytes(*code);
    match code {
        messages::SSL_REQUEST | messages::GSSENC_REQUEST => len == 8,
        messages::CANCEL_REQUEST => len == 16,
        c if c >> 16 == 3 && (9..=10_000).contains(&len) => {
            let visible = params.get(..len as usize - 8).unwrap_or(params);
            startup_params_look_right(visible)
        }
        _ => false,
    }
}

/// Parameter names and values: NUL-terminated text, ending with an empty
/// name (the last one may be cut by the end of the capture).
fn startup_params_look_right(params: &[u8]) -> bool {
    params.iter().all(|&b| b == 0 || b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\r'))
        && params.first().is_none_or(|&b| b != 0 || params.len() == 1)
}

/// Whether `prefix` (a client's captured bytes on a connection already
/// open) starts with a plausible frontend message: type `Q`, `P`, `B`, `E`,
/// `S`, `D`, `C`, `H`, `X` or `F`, a length below 16 MiB that fits the
/// type, and a body that passes a structural check as far as it was
/// captured (SQL and names are NUL-terminated UTF-8 text; Bind, Execute,
/// Describe, Close and Sync are laid out as the protocol says). Every
/// message wholly inside `prefix` must pass, so a false match needs several
/// coincidences.
pub fn looks_like_client_messages(prefix: &[u8]) -> bool {
    let Some((&tag, rest)) = prefix.split_first() else { return false };
    let Some(len) = rest.first_chunk::<4>().map(|l| u32::from_be_bytes(*l)) else { return false };
    matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'S' | b'D' | b'C' | b'H' | b'X' | b'F')
        && len < 16 << 20
        && plausible(Side::Frontend, prefix)
}
