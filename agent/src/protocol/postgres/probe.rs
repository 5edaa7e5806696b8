//! Recognising message boundaries in bytes whose framing was lost (or never
//! known, on a connection captured mid-stream): structural checks of
//! message bodies, and the `ReadyForQuery` signature.

use super::framing::{Side, known_type, valid_len};
use super::reader::Reader;

/// Longest message accepted as running past the end of the chunk that
/// resyncs framing: a false match on a random length would otherwise
/// swallow up to 1 GiB of the stream. A real longer one is missed, and the
/// server side still recovers at its `ReadyForQuery`.
const MAX_PARTIAL: u32 = 1 << 20;

/// Whether `data` (a chunk's captured bytes) starts with well-formed
/// messages of `side`: every message wholly inside must pass a structural
/// check, and one running past the end must be plausible as far as it goes.
/// Used to find a message boundary again after lost framing.
pub(super) fn plausible(side: Side, data: &[u8]) -> bool {
    let mut rest = data;
    let mut count = 0;
    while let Some((head, body_all)) = rest.split_first_chunk::<5>() {
        let [tag, l0, l1, l2, l3] = *head;
        let Some(len) = u32::from_be_bytes([l0, l1, l2, l3]).checked_sub(4).filter(|&l| valid_len(side, tag, l)) else {
            return false;
        };
        let Some((body, tail)) = body_all.split_at_checked(len as usize) else {
            return len <= MAX_PARTIAL && body_ok(side, tag, body_all, false);
        };
        if !body_ok(side, tag, body, true) {
            return false;
        }
        count += 1;
        rest = tail;
    }
    // A header cut by the end of the chunk must at least have a known type.
    count > 0 && rest.first().is_none_or(|&t| known_type(side, t))
}

/// Structural check of a body (`whole`: all of it, else a prefix).
fn body_ok(side: Side, tag: u8, body: &[u8], whole: bool) -> bool {
    let mut r = Reader::new(body);
    // A whole body must be used up exactly; a prefix may stop anywhere.
    let end_ok = |r: &Reader<'_>| !whole || r.done();
    match (side, tag) {
        (Side::Backend, b'Z') => body.first().is_none_or(|s| matches!(s, b'I' | b'T' | b'E')),
        (Side::Backend, b'C') => body.first().is_none_or(u8::is_ascii_uppercase) && r.cstr_text(whole) && end_ok(&r),
        (Side::Backend, b'D') => data_row_ok(&mut r, whole),
        (Side::Backend, b'E' | b'N') => loop {
            match r.u8() {
                Some(0) => return end_ok(&r),
                Some(f) if f.is_ascii_alphabetic() => {
                    if !r.cstr_text(whole) {
                        return false;
                    }
                }
                Some(_) => return false,
                None => return !whole,
            }
        },
        (Side::Backend, b'S') => r.cstr_text(whole) && r.cstr_text(whole) && end_ok(&r),
        (Side::Frontend, b'Q') => r.cstr_text(whole) && end_ok(&r),
        (Side::Frontend, b'P') => {
            r.cstr_text(whole)
                && r.cstr_text(whole)
                && (!whole || r.i16().is_some_and(|n| n >= 0 && r.skip(n as usize * 4).is_some() && r.done()))
        }
        (Side::Frontend, b'B') => r.cstr_text(whole) && r.cstr_text(whole) && (!whole || bind_tail_ok(&mut r)),
        (Side::Frontend, b'E') => r.cstr_text(whole) && (!whole || (r.skip(4).is_some() && r.done())),
        (Side::Frontend, b'C' | b'D') => {
            r.u8().is_none_or(|k| matches!(k, b'S' | b'P')) && r.cstr_text(whole) && end_ok(&r)
        }
        _ => true,
    }
}

/// Column count, then each column's length and bytes.
fn data_row_ok(r: &mut Reader<'_>, whole: bool) -> bool {
    let Some(n) = r.i16() else { return !whole };
    if n < 0 {
        return false;
    }
    for _ in 0..n {
        match r.i32() {
            Some(-1) => {}
            Some(l) if l >= 0 => {
                if r.skip(l as usize).is_none() {
                    return !whole;
                }
            }
            Some(_) => return false,
            None => return !whole,
        }
    }
    !whole || r.done()
}

/// Formats, parameters and result formats after Bind's two names.
fn bind_tail_ok(r: &mut Reader<'_>) -> bool {
    let fmt_codes = |r: &mut Reader<'_>| -> Option<()> {
        let n = r.i16().filter(|&n| n >= 0)?;
        for _ in 0..n {
            r.i16().filter(|f| matches!(f, 0 | 1))?;
        }
        Some(())
    };
    let params = |r: &mut Reader<'_>| -> Option<()> {
        let n = r.i16().filter(|&n| n >= 0)?;
        for _ in 0..n {
            match r.i32()? {
                -1 => {}
                l if l >= 0 => r.skip(l as usize)?,
                _ => return None,
            }
        }
        Some(())
    };
    fmt_codes(r).is_some() && params(r).is_some() && fmt_codes(r).is_some() && r.done()
}

/// Names and SQL: UTF-8 (a character cut by the end is fine) without
/// control bytes other than whitespace.
pub(super) fn looks_like_text(s: &[u8]) -> bool {
    s.iter().all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\r'))
        && std::str::from_utf8(s).map_or_else(|e| e.error_len().is_none(), |_| true)
}

/// Where a `ReadyForQuery` sits in `data`: its signature (`Z`, length 5,
/// a transaction status) is specific enough to find the end of a reply in
/// bytes whose framing was lost.
pub(super) fn find_ready(data: &[u8]) -> Option<usize> {
    data.windows(6).position(|w| w[0] == b'Z' && w[1..5] == [0, 0, 0, 5] && matches!(w[5], b'I' | b'T' | b'E'))
}

/// Start of a whole `CommandComplete`, `ErrorResponse` or
/// `EmptyQueryResponse` ending right at `end` (a `ReadyForQuery` found by
/// [`find_ready`]): the result it closes.
pub(super) fn result_before(data: &[u8], end: usize) -> Option<usize> {
    let lowest = end.saturating_sub(4096);
    (lowest..end.saturating_sub(4)).rev().find(|&p| {
        let Some([tag, l0, l1, l2, l3]) = data.get(p..).and_then(|d| d.first_chunk::<5>()).copied() else {
            return false;
        };
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        matches!(tag, b'C' | b'E' | b'I')
            && usize::try_from(len).is_ok_and(|l| p + 1 + l == end)
            && len.checked_sub(4).is_some_and(|l| valid_len(Side::Backend, tag, l))
            && data.get(p + 5..end).is_some_and(|body| body_ok(Side::Backend, tag, body, true))
    })
}
