//! Whether client bytes start like a Redis command: used to pick the
//! protocol for a new connection and to resynchronise after a gap.

use super::MAX_ARGS;

/// Inline commands recognised: the ones people type into `nc`/`telnet` or
/// health checks send. Other inline commands are parsed once the stream is
/// known to be Redis, but too many text protocols start with a word for a
/// longer list to be a safe signature.
const INLINE: &[&[u8]] = &[b"PING", b"INFO", b"QUIT", b"HELLO", b"AUTH", b"SELECT", b"DBSIZE", b"MONITOR", b"ECHO"];

/// Longest name accepted as a command in a RESP prefix.
const MAX_NAME: usize = 32;

/// Whether `prefix`, the first bytes of a client chunk, starts like a Redis
/// command:
///
/// - a RESP array of bulk strings, `*<n>\r\n$<len>\r\n<name>`, with `n` in
///   1..=1048576, `len` in 1..=32 and a name of ASCII letters, digits, `_`,
///   `-`, `.` or `|` starting with a letter; or any prefix of at least two
///   bytes of that form (`*3`, `*3\r\n$3\r\nSE`), so a short capture still
///   matches;
/// - or an inline command from a small set (`PING`, `INFO`, `QUIT`,
///   `HELLO`, `AUTH`, `SELECT`, `DBSIZE`, `MONITOR`, `ECHO`, any case)
///   followed by a space, `\r` or `\n`.
pub fn looks_like_command(prefix: &[u8]) -> bool {
    match prefix.split_first() {
        Some((b'*', rest)) => resp_prefix(rest),
        Some(_) => inline(prefix),
        None => false,
    }
}

fn resp_prefix(rest: &[u8]) -> bool {
    if rest.is_empty() {
        return false;
    }
    let rest = match field(rest, MAX_ARGS) {
        Field::Ended => return true,
        Field::Bad => return false,
        Field::Next(rest) => rest,
    };
    let rest = match rest.split_first() {
        None => return true,
        Some((b'$', rest)) => rest,
        Some(_) => return false,
    };
    let (len, rest) = match field_value(rest, MAX_NAME as u64) {
        Field::Ended => return true,
        Field::Bad => return false,
        Field::Next(pair) => pair,
    };
    let (name, tail) = rest.split_at(len.min(rest.len()));
    let mut bytes = name.iter();
    let name_ok = match bytes.next() {
        None => true,
        Some(b) => {
            b.is_ascii_alphabetic()
                && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'|'))
        }
    };
    name_ok && (tail.is_empty() || tail == b"\r" || tail.starts_with(b"\r\n"))
}

/// A length field of a RESP prefix.
enum Field<T> {
    /// The input ended inside it, plausibly.
    Ended,
    /// It cannot be a length in range.
    Bad,
    /// A whole field and its `\r\n`, then what follows.
    Next(T),
}

fn field(bytes: &[u8], max: u64) -> Field<&[u8]> {
    match field_value(bytes, max) {
        Field::Next((_, rest)) => Field::Next(rest),
        Field::Ended => Field::Ended,
        Field::Bad => Field::Bad,
    }
}

/// Digits in `1..=max` (no leading zero) then `\r\n`.
fn field_value(bytes: &[u8], max: u64) -> Field<(usize, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let (head, rest) = bytes.split_at(digits.min(bytes.len()));
    if head.is_empty() {
        return if rest.is_empty() { Field::Ended } else { Field::Bad };
    }
    if head.len() > 7 || head.first() == Some(&b'0') {
        return Field::Bad;
    }
    let value = head.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    if value > max {
        return Field::Bad;
    }
    match rest {
        [] | [b'\r'] => Field::Ended,
        [b'\r', b'\n', tail @ ..] if value >= 1 => Field::Next((value as usize, tail)),
        _ => Field::Bad,
    }
}

fn inline(prefix: &[u8]) -> bool {
    let word_len = prefix.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let (word, rest) = prefix.split_at(word_len.min(prefix.len()));
    matches!(rest.first(), Some(b' ' | b'\r' | b'\n')) && INLINE.iter().any(|known| known.eq_ignore_ascii_case(word))
}
