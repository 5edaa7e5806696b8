//! Reading the few message bodies the session needs. Everything else
//! (row data, parameter values, passwords, copy data) is never looked at.

use super::reader::Reader;
use crate::protocol::db::{DbError, MAX_ERROR_MESSAGE, truncate_text};

/// Protocol 3.x in a StartupMessage (the minor version is in the low half).
const PROTOCOL_3: u32 = 3 << 16;
/// Codes of the special requests a client may send instead of a startup.
pub(super) const CANCEL_REQUEST: u32 = 80_877_102;
pub(super) const SSL_REQUEST: u32 = 80_877_103;
pub(super) const GSSENC_REQUEST: u32 = 80_877_104;

/// Longest user or database name kept (the server's own limit is 63 bytes).
const MAX_NAME: usize = 256;

/// A client's untyped startup-phase message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Untyped {
    Startup { user: Option<String>, database: Option<String> },
    SslRequest,
    GssEncRequest,
    Cancel,
    Unknown,
}

/// Decodes an untyped message body (after its length).
pub(super) fn untyped(body: &[u8]) -> Untyped {
    let mut r = Reader::new(body);
    let Some(code) = r.i32().map(|c| c as u32) else {
        return Untyped::Unknown;
    };
    match code {
        SSL_REQUEST => Untyped::SslRequest,
        GSSENC_REQUEST => Untyped::GssEncRequest,
        CANCEL_REQUEST => Untyped::Cancel,
        c if c & 0xffff_0000 == PROTOCOL_3 => {
            let (mut user, mut database) = (None, None);
            while let Some(key) = r.cstr().filter(|k| !k.is_empty()) {
                let Some(value) = r.cstr() else { break };
                match key {
                    b"user" => user = Some(name(value)),
                    b"database" => database = Some(name(value)),
                    _ => {}
                }
            }
            Untyped::Startup { user, database }
        }
        _ => Untyped::Unknown,
    }
}

fn name(raw: &[u8]) -> String {
    truncate_text(String::from_utf8_lossy(raw).into_owned(), MAX_NAME)
}

/// A string that ends at its NUL, or at the end of a kept prefix.
fn cstr_or_rest<'a>(r: &mut Reader<'a>) -> &'a [u8] {
    match r.cstr() {
        Some(s) => s,
        None => {
            let rest = r.rest();
            let _ = r.skip(rest.len());
            rest
        }
    }
}

/// SQL text of a Query body.
pub(super) fn query(body: &[u8]) -> &[u8] {
    cstr_or_rest(&mut Reader::new(body))
}

/// Statement name and SQL text of a Parse body.
pub(super) fn parse(body: &[u8]) -> (&[u8], &[u8]) {
    let mut r = Reader::new(body);
    let name = cstr_or_rest(&mut r);
    (name, cstr_or_rest(&mut r))
}

/// Portal and statement names of a Bind body (`None` when cut before both
/// names ended).
pub(super) fn bind(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut r = Reader::new(body);
    Some((r.cstr()?, r.cstr()?))
}

/// Portal name of an Execute body.
pub(super) fn execute(body: &[u8]) -> Option<&[u8]> {
    Reader::new(body).cstr()
}

/// What a Close or Describe targets: `(b'S' | b'P', name)`.
pub(super) fn target(body: &[u8]) -> Option<(u8, &[u8])> {
    let mut r = Reader::new(body);
    Some((r.u8()?, r.cstr()?))
}

/// SQLSTATE and message of an ErrorResponse.
pub(super) fn error(body: &[u8]) -> DbError {
    let mut r = Reader::new(body);
    let (mut code, mut message) = (String::new(), String::new());
    while let Some(field) = r.u8().filter(|&f| f != 0) {
        let Some(value) = r.cstr() else { break };
        match field {
            b'C' => code = String::from_utf8_lossy(value).chars().take(5).collect(),
            b'M' => message = truncate_text(String::from_utf8_lossy(value).into_owned(), MAX_ERROR_MESSAGE),
            _ => {}
        }
    }
    DbError { code, message }
}

/// Rows a CommandComplete tag reports (`SELECT 5`, `INSERT 0 3`,
/// `UPDATE 2`...); `None` for tags without a count (`CREATE TABLE`).
pub(super) fn tag_rows(body: &[u8]) -> Option<u64> {
    let tag = body.split(|&b| b == 0).next().unwrap_or_default();
    let verb = tag.split(|&b| b == b' ').next().unwrap_or_default();
    const COUNTED: [&[u8]; 8] = [b"SELECT", b"INSERT", b"UPDATE", b"DELETE", b"MERGE", b"FETCH", b"MOVE", b"COPY"];
    if !COUNTED.contains(&verb) {
        return None;
    }
    let last = tag.rsplit(|&b| b == b' ').next()?;
    std::str::from_utf8(last).ok()?.parse().ok()
}
