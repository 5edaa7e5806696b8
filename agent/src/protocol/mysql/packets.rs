//! Decoding of the few payloads the parser reads: handshake packets, OK,
//! ERR and EOF. Every read is checked; a short payload gives `None`.

use crate::protocol::db::{DbError, MAX_ERROR_MESSAGE, truncate_text};

pub(super) const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
pub(super) const CLIENT_COMPRESS: u32 = 0x20;
pub(super) const CLIENT_PROTOCOL_41: u32 = 0x200;
pub(super) const CLIENT_SSL: u32 = 0x800;
pub(super) const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
pub(super) const CLIENT_PLUGIN_AUTH_LENENC_DATA: u32 = 1 << 21;
pub(super) const CLIENT_SESSION_TRACK: u32 = 1 << 23;
pub(super) const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
pub(super) const CLIENT_OPTIONAL_RESULTSET_METADATA: u32 = 1 << 25;
pub(super) const CLIENT_ZSTD_COMPRESSION: u32 = 1 << 26;
pub(super) const CLIENT_QUERY_ATTRIBUTES: u32 = 1 << 27;

pub(super) const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
pub(super) const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;
pub(super) const SERVER_SESSION_STATE_CHANGED: u16 = 0x4000;

/// MariaDB progress reports travel as ERR packets with this code; they do
/// not end the command.
const PROGRESS_REPORT: u16 = 0xffff;
/// Longest user or schema name kept (MySQL names are at most 64 chars).
const MAX_NAME: usize = 256;
const SESSION_TRACK_SCHEMA: u8 = 1;

/// Bounds-checked cursor over a payload.
pub(super) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub(super) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b)
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_le_bytes([*b.first()?, *b.get(1)?]))
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    /// Length-encoded integer; `None` for the NULL marker (0xfb) and 0xff.
    pub(super) fn lenenc(&mut self) -> Option<u64> {
        let n = match self.u8()? {
            b @ 0..=0xfa => return Some(u64::from(b)),
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            _ => return None,
        };
        let mut v = [0u8; 8];
        v.get_mut(..n)?.copy_from_slice(self.bytes(n)?);
        Some(u64::from_le_bytes(v))
    }

    pub(super) fn lenenc_bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.lenenc()?;
        self.bytes(usize::try_from(n).ok()?)
    }

    /// Bytes up to a NUL (consumed); all the rest when there is none.
    pub(super) fn nul_str(&mut self) -> &'a [u8] {
        match self.0.iter().position(|&b| b == 0) {
            Some(i) => {
                let s = self.0.get(..i).unwrap_or_default();
                self.0 = self.0.get(i + 1..).unwrap_or_default();
                s
            }
            None => std::mem::take(&mut self.0),
        }
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        self.0
    }
}

/// A name from the wire, lossy UTF-8, bounded; `None` when empty.
pub(super) fn name(b: &[u8]) -> Option<String> {
    if b.is_empty() {
        return None;
    }
    let b = b.get(..MAX_NAME.min(b.len())).unwrap_or_default();
    Some(String::from_utf8_lossy(b).into_owned())
}

/// The server's Initial Handshake (protocol 10): its capability flags.
pub(super) fn greeting_caps(p: &[u8]) -> Option<u32> {
    let mut r = Reader(p);
    if r.u8()? != 10 {
        return None;
    }
    r.nul_str();
    r.bytes(4 + 8 + 1)?;
    let low = u32::from(r.u16()?);
    // Servers older than 4.1 stop here.
    let high = match (r.u8(), r.u16(), r.u16()) {
        (Some(_), Some(_), Some(h)) => u32::from(h),
        _ => 0,
    };
    Some(low | high << 16)
}

/// What the client's HandshakeResponse (or SSLRequest) says.
#[derive(Debug, Default)]
pub(super) struct HandshakeResponse {
    pub caps: u32,
    pub ssl_request: bool,
    pub user: Option<String>,
    pub database: Option<String>,
}

/// Decodes a HandshakeResponse41/320. The auth response is stepped over,
/// never copied.
pub(super) fn handshake_response(p: &[u8]) -> Option<HandshakeResponse> {
    let mut r = Reader(p);
    let low = u32::from(r.u16()?);
    if low & CLIENT_PROTOCOL_41 == 0 {
        // HandshakeResponse320: caps u16, max packet u24, user, auth.
        r.bytes(3)?;
        let user = name(r.nul_str());
        return Some(HandshakeResponse { caps: low, user, ..Default::default() });
    }
    let caps = low | u32::from(r.u16()?) << 16;
    r.bytes(4 + 1 + 23)?;
    if r.rest().is_empty() {
        return Some(HandshakeResponse { caps, ssl_request: caps & CLIENT_SSL != 0, ..Default::default() });
    }
    let user = name(r.nul_str());
    let mut out = HandshakeResponse { caps, user, ..Default::default() };
    if caps & CLIENT_CONNECT_WITH_DB != 0 && skip_auth(&mut r, caps).is_some() {
        out.database = name(r.nul_str());
    }
    Some(out)
}

fn skip_auth(r: &mut Reader, caps: u32) -> Option<()> {
    if caps & CLIENT_PLUGIN_AUTH_LENENC_DATA != 0 {
        r.lenenc_bytes()?;
    } else if caps & CLIENT_SECURE_CONNECTION != 0 {
        let n = r.u8()?;
        r.bytes(usize::from(n))?;
    } else {
        r.nul_str();
    }
    Some(())
}

/// COM_CHANGE_USER (after the command byte): the new user and schema.
pub(super) fn change_user(p: &[u8], caps: u32) -> (Option<String>, Option<String>) {
    let mut r = Reader(p);
    let user = name(r.nul_str());
    let db = skip_auth(&mut r, caps).and_then(|()| name(r.nul_str()));
    (user, db)
}

/// What an OK packet (0x00, or 0xfe ending a result set) says.
#[derive(Debug, Default)]
pub(super) struct Ok {
    pub affected: u64,
    pub status: u16,
    /// The current schema, when session tracking reported a change.
    pub schema: Option<String>,
}

pub(super) fn ok_packet(p: &[u8], caps: Option<u32>) -> Option<Ok> {
    let mut r = Reader(p.get(1..)?);
    let affected = r.lenenc()?;
    r.lenenc()?;
    let status = r.u16()?;
    let mut ok = Ok { affected, status, schema: None };
    let tracked = caps.is_some_and(|c| c & CLIENT_SESSION_TRACK != 0);
    if tracked && status & SERVER_SESSION_STATE_CHANGED != 0 && r.u16().is_some() {
        ok.schema = tracked_schema(&mut r);
    }
    Some(ok)
}

/// Session-state entries after the info string: the schema one, if any.
fn tracked_schema(r: &mut Reader) -> Option<String> {
    r.lenenc_bytes()?;
    let mut state = Reader(r.lenenc_bytes()?);
    let mut schema = None;
    while let Some(kind) = state.u8() {
        let data = state.lenenc_bytes()?;
        if kind == SESSION_TRACK_SCHEMA {
            schema = name(Reader(data).lenenc_bytes()?);
        }
    }
    schema
}

/// Status flags of an EOF packet (0xfe, warnings u16, status u16).
pub(super) fn eof_status(p: &[u8]) -> u16 {
    let mut r = Reader(p.get(3..).unwrap_or_default());
    r.u16().unwrap_or(0)
}

/// An ERR packet's code and message; `None` for progress reports.
pub(super) fn err_packet(p: &[u8]) -> Option<DbError> {
    let mut r = Reader(p.get(1..)?);
    let code = r.u16().unwrap_or(0);
    if code == PROGRESS_REPORT {
        return None;
    }
    let mut msg = r.rest();
    if let Some(rest) = msg.strip_prefix(b"#") {
        msg = rest.get(5..).unwrap_or_default();
    }
    let msg = msg.get(..msg.len().min(MAX_ERROR_MESSAGE + 4)).unwrap_or_default();
    Some(DbError {
        code: code.to_string(),
        message: truncate_text(String::from_utf8_lossy(msg).into_owned(), MAX_ERROR_MESSAGE),
    })
}
