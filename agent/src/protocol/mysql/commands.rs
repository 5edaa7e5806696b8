//! Client commands (the first payload byte in the command phase) and what
//! each makes the parser expect from the server.

use super::packets::{CLIENT_QUERY_ATTRIBUTES, Reader, change_user, name};
use super::reply::Expect;
use crate::protocol::db::{MAX_QUERY_TEXT, truncate_text};
use crate::protocol::sql::summarize_mysql;

pub(super) const COM_QUIT: u8 = 0x01;
pub(super) const COM_INIT_DB: u8 = 0x02;
pub(super) const COM_QUERY: u8 = 0x03;
pub(super) const COM_FIELD_LIST: u8 = 0x04;
pub(super) const COM_STATISTICS: u8 = 0x09;
pub(super) const COM_PROCESS_INFO: u8 = 0x0a;
pub(super) const COM_PING: u8 = 0x0e;
pub(super) const COM_CHANGE_USER: u8 = 0x11;
pub(super) const COM_BINLOG_DUMP: u8 = 0x12;
pub(super) const COM_TABLE_DUMP: u8 = 0x13;
pub(super) const COM_STMT_PREPARE: u8 = 0x16;
pub(super) const COM_STMT_EXECUTE: u8 = 0x17;
pub(super) const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub(super) const COM_STMT_CLOSE: u8 = 0x19;
pub(super) const COM_STMT_RESET: u8 = 0x1a;
pub(super) const COM_STMT_FETCH: u8 = 0x1c;
pub(super) const COM_BINLOG_DUMP_GTID: u8 = 0x1e;
pub(super) const COM_RESET_CONNECTION: u8 = 0x1f;
pub(super) const COM_CLONE: u8 = 0x20;
/// MariaDB's array-binding execute.
pub(super) const COM_STMT_BULK_EXECUTE: u8 = 0xfa;

/// A prepared statement's exportable description.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Statement {
    pub operation: Option<String>,
    pub collection: Option<String>,
    pub text: Option<String>,
}

/// What happens on the server's success.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Effect {
    #[default]
    None,
    /// `COM_INIT_DB` or a `USE` query.
    SetNamespace(String),
    /// `COM_CHANGE_USER`.
    ChangeUser { user: Option<String>, database: Option<String> },
    /// `COM_STMT_PREPARE`: remember the statement under the id the reply gives.
    Prepare(Statement),
}

/// A decoded command.
#[derive(Debug)]
pub(super) enum Command {
    /// No reply comes (`COM_QUIT`, `COM_STMT_SEND_LONG_DATA`).
    Silent,
    /// `COM_STMT_CLOSE`: no reply; the statement is forgotten.
    CloseStatement(u32),
    /// The connection turns into something not request/response
    /// (replication, clone).
    Unsupported,
    /// A command with a reply, reported as an exchange.
    Exchange { statement: Statement, expect: Expect, effect: Effect, statement_id: Option<u32> },
}

/// Decodes a command from its head (command byte first). `caps` are the
/// negotiated capabilities when the handshake was seen.
pub(super) fn decode(head: &[u8], caps: Option<u32>) -> Option<Command> {
    let (&cmd, body) = head.split_first()?;
    let op = |s: &str| Statement { operation: Some(s.to_string()), ..Default::default() };
    let simple = |s: &str| Command::Exchange {
        statement: op(s),
        expect: Expect::Single,
        effect: Effect::None,
        statement_id: None,
    };
    Some(match cmd {
        COM_QUIT | COM_STMT_SEND_LONG_DATA => Command::Silent,
        COM_STMT_CLOSE => Command::CloseStatement(Reader(body).u32()?),
        COM_BINLOG_DUMP | COM_TABLE_DUMP | COM_BINLOG_DUMP_GTID | COM_CLONE => Command::Unsupported,
        COM_QUERY => {
            let text = query_text(body, caps);
            let effect = text.and_then(use_target).map_or(Effect::None, Effect::SetNamespace);
            let statement = text.map(summary).unwrap_or_default();
            Command::Exchange { statement, expect: Expect::Generic, effect, statement_id: None }
        }
        COM_STMT_PREPARE => {
            let statement = summary(&String::from_utf8_lossy(body));
            let shown = Statement { operation: Some("PREPARE".to_string()), ..statement.clone() };
            Command::Exchange {
                statement: shown,
                expect: Expect::Prepare,
                effect: Effect::Prepare(statement),
                statement_id: None,
            }
        }
        COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE | COM_STMT_FETCH | COM_STMT_RESET => {
            let expect = match cmd {
                COM_STMT_FETCH => Expect::Fetch,
                COM_STMT_RESET => Expect::Single,
                _ => Expect::Generic,
            };
            let operation = match cmd {
                COM_STMT_FETCH => "FETCH",
                COM_STMT_RESET => "STMT_RESET",
                _ => "EXECUTE",
            };
            Command::Exchange {
                statement: op(operation),
                expect,
                effect: Effect::None,
                statement_id: Reader(body).u32(),
            }
        }
        COM_INIT_DB => {
            let effect = name(body).map_or(Effect::None, Effect::SetNamespace);
            Command::Exchange { statement: op("USE"), expect: Expect::Single, effect, statement_id: None }
        }
        COM_FIELD_LIST => {
            let statement = Statement { collection: name(Reader(body).nul_str()), ..op("FIELD_LIST") };
            Command::Exchange { statement, expect: Expect::FieldList, effect: Effect::None, statement_id: None }
        }
        COM_CHANGE_USER => {
            let (user, database) = change_user(body, caps.unwrap_or(super::packets::CLIENT_SECURE_CONNECTION));
            Command::Exchange {
                statement: op("CHANGE_USER"),
                expect: Expect::Auth,
                effect: Effect::ChangeUser { user, database },
                statement_id: None,
            }
        }
        COM_PROCESS_INFO => Command::Exchange {
            statement: op("PROCESS_INFO"),
            expect: Expect::Generic,
            effect: Effect::None,
            statement_id: None,
        },
        COM_STATISTICS => simple("STATISTICS"),
        COM_PING => simple("PING"),
        COM_RESET_CONNECTION => simple("RESET_CONNECTION"),
        other => simple(&command_name(other)),
    })
}

fn command_name(cmd: u8) -> String {
    match cmd {
        0x00 => "SLEEP".to_string(),
        0x05 => "CREATE_DB".to_string(),
        0x06 => "DROP_DB".to_string(),
        0x07 => "REFRESH".to_string(),
        0x08 => "SHUTDOWN".to_string(),
        0x0c => "PROCESS_KILL".to_string(),
        0x0d => "DEBUG".to_string(),
        0x1b => "SET_OPTION".to_string(),
        0x15 => "REGISTER_SLAVE".to_string(),
        _ => format!("COM_{cmd:#04X}"),
    }
}

fn summary(text: &str) -> Statement {
    let s = summarize_mysql(text);
    Statement { operation: s.operation, collection: s.collection, text: Some(truncate_text(s.text, MAX_QUERY_TEXT)) }
}

/// The SQL of a COM_QUERY, past the query attributes MySQL 8 clients may
/// put first (parameter count, set count 1, then the parameters).
fn query_text(body: &[u8], caps: Option<u32>) -> Option<&str> {
    let with_attributes = match caps {
        Some(c) => c & CLIENT_QUERY_ATTRIBUTES != 0,
        // Unknown capabilities: SQL never starts with a NUL byte.
        None => body.first() == Some(&0),
    };
    let sql = if with_attributes { skip_query_attributes(body)? } else { body };
    let sql = match std::str::from_utf8(sql) {
        Ok(s) => s,
        // A cut multi-byte char at the end of a captured head.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(sql.get(..e.valid_up_to())?).ok()?,
        Err(_) => return None,
    };
    Some(sql)
}

fn skip_query_attributes(body: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(body);
    let count = r.lenenc()?;
    r.lenenc()?;
    if count == 0 {
        return Some(r.rest());
    }
    let count = usize::try_from(count).ok().filter(|&c| c <= 4096)?;
    let nulls = r.bytes(count.div_ceil(8))?;
    if r.u8()? != 1 {
        return None;
    }
    let mut types = Vec::with_capacity(count);
    for _ in 0..count {
        types.push(r.u16()?);
        r.lenenc_bytes()?;
    }
    for (i, ty) in types.into_iter().enumerate() {
        let null = nulls.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
        if !null {
            skip_binary_value(&mut r, ty as u8)?;
        }
    }
    Some(r.rest())
}

/// Steps over one value in the binary protocol encoding of `ty`.
fn skip_binary_value(r: &mut Reader, ty: u8) -> Option<()> {
    match ty {
        0x06 => {}
        0x01 => _ = r.bytes(1)?,
        0x02 | 0x0d => _ = r.bytes(2)?,
        0x03 | 0x04 | 0x09 => _ = r.bytes(4)?,
        0x05 | 0x08 => _ = r.bytes(8)?,
        0x07 | 0x0a | 0x0b | 0x0c => {
            let n = r.u8()?;
            r.bytes(usize::from(n))?;
        }
        _ => _ = r.lenenc_bytes()?,
    }
    Some(())
}

/// The schema a `USE name` statement switches to.
fn use_target(sql: &str) -> Option<String> {
    let rest = skip_space_and_comments(sql);
    let kw = rest.get(..3)?;
    if !kw.eq_ignore_ascii_case("use") {
        return None;
    }
    let after = rest.get(3..)?;
    let arg = skip_space_and_comments(after);
    if arg.len() == after.len() && !arg.starts_with('`') {
        return None;
    }
    let db = if let Some(quoted) = arg.strip_prefix('`') {
        let mut out = String::new();
        let mut chars = quoted.chars();
        loop {
            match chars.next()? {
                '`' if chars.as_str().starts_with('`') => {
                    chars.next();
                    out.push('`');
                }
                '`' => break,
                c => out.push(c),
            }
        }
        out
    } else {
        arg.split(|c: char| c.is_whitespace() || c == ';').next()?.to_string()
    };
    name(db.as_bytes())
}

fn skip_space_and_comments(mut s: &str) -> &str {
    loop {
        let t = s.trim_start();
        if let Some(c) = t.strip_prefix("/*") {
            s = c.split_once("*/").map_or("", |(_, r)| r);
        } else if t.starts_with('#') || t.starts_with("-- ") {
            s = t.split_once('\n').map_or("", |(_, r)| r);
        } else {
            return t;
        }
    }
}
