//! Keeps only the head of an HTTP/1 message whose `Content-Length` body
//! fills the rest of the syscall. User space reads the head and needs the
//! body only for its length, which the record's `size` already gives; the
//! body bytes otherwise cross the ring for nothing. The scan costs ~0.2 us
//! per message: about what user space saves at 1 KiB bodies, less than it
//! saves at 4 KiB, and the ring holds several times the messages before it
//! overflows. The capture copies what the scan reads first, from the first
//! buffer of the syscall alone; when a server keeps its head and body in
//! buffers of their own (nginx's writev), the body is then never copied
//! from user memory either, which saved ~0.2 us of the ~1.2 us a traced
//! nginx response cost in the kernel (each copy is a helper call, and a
//! call costs more than the bytes it moves).
//!
//! Anything the scan is not sure about is captured whole, as before:
//! chunked or otherwise encoded bodies (their framing is in the body),
//! several messages in one syscall (the lengths would not add up), heads
//! longer than `MAX_HEAD` or split over several buffers, bare-LF line
//! ends. (A second scan for split heads would be cheap to run, but the
//! verifier walks it once for every way the first copy could end, and that
//! passed its budget.) The one case it cannot tell apart is a response to
//! HEAD followed in the same syscall by exactly `Content-Length` bytes of
//! another message, which a server never writes.

use aya_ebpf::helpers::generated;
use kspan_common::{Counter, MAX_CAPTURE};

use crate::maps::{DataScratch, ScanCursor, count};

/// Messages shorter than this are captured whole: the scan would cost more
/// than the copy it saves.
const MIN_SIZE: u64 = 512;
/// Longest head scanned, in bytes (a multiple of 8).
const MAX_HEAD: u32 = 2048;
/// Scan steps: at most one per word, plus one per line (at most one per
/// two bytes).
const MAX_STEPS: u32 = MAX_HEAD / 8 + MAX_HEAD / 2;
const WORDS_PER_STEP: u32 = 4;
const LF_WORD: u64 = 0x0a0a_0a0a_0a0a_0a0a;
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;
/// Whitespace around a header value, and digits of a length, looked at.
const MAX_OWS: u32 = 4;
const MAX_DIGITS: u32 = 18;
/// Lower-cases ASCII letters and leaves `-` and `:` as they are.
const CASE: u64 = 0x2020_2020_2020_2020;

#[repr(C)]
struct Scan {
    payload: *const u8,
    /// Bytes scanned: the captured ones, at most `MAX_HEAD`.
    limit: u32,
    /// Where the scan goes on, the last line feed (valid once `started`)
    /// and the `Content-Length` (once `has_length`). They live in the
    /// scratch map value, not here on the stack: the verifier checks the
    /// callback until its states repeat, and it tracks stack values so
    /// closely that a cursor which only grows never repeats. Map values it
    /// does not track.
    cursor: *mut ScanCursor,
    /// The start line is behind: a flag, not a line count, for the same
    /// reason.
    started: u32,
    /// Offset just past the blank line, once found.
    head_end: u32,
    request: u32,
    has_length: u32,
    give_up: u32,
}

/// Byte `off` of the payload; the mask keeps it provably inside the buffer.
#[inline(always)]
fn byte(payload: *const u8, off: u32) -> u8 {
    let off = unsafe { core::ptr::read_volatile(&off) } as usize & (2 * MAX_CAPTURE - 1);
    // SAFETY: off < 2 * MAX_CAPTURE, the payload's length.
    unsafe { *payload.add(off) }
}

/// Eight bytes at any offset, little-endian, from the two aligned words
/// they straddle (BPF would otherwise load them one byte at a time).
#[inline(always)]
fn word_at(payload: *const u8, off: u32) -> u64 {
    let base = off & !7;
    let shift = (off & 7) * 8;
    let lo = aligned_word(payload, base);
    if shift == 0 {
        return lo;
    }
    (lo >> shift) | (aligned_word(payload, base + 8) << (64 - shift))
}

/// The aligned word `off` (a multiple of 8) in one load.
#[inline(always)]
fn aligned_word(payload: *const u8, off: u32) -> u64 {
    let off = unsafe { core::ptr::read_volatile(&off) } as usize & (2 * MAX_CAPTURE - 8);
    // SAFETY: off + 8 <= 2 * MAX_CAPTURE; the payload follows the 56-byte
    // header of an 8-aligned map value, so it is 8-aligned too.
    unsafe { *(payload.add(off) as *const u64) }
}

const fn lit(s: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*s)
}

/// Whether the payload's first word starts an HTTP/1 message, and whether
/// a request (one whose method commonly carries a body; the request line
/// is checked to its end by the scan).
#[inline(always)]
fn message_start(first: u64) -> Option<bool> {
    if first & 0x00ff_ffff_ffff_ffff == lit(b"HTTP/1.\0") {
        return Some(false);
    }
    const POST: u64 = u32::from_le_bytes(*b"POST") as u64;
    const PUT: u64 = u32::from_le_bytes(*b"PUT ") as u64;
    const PATCH: u64 = u32::from_le_bytes(*b"PATC") as u64;
    const DELETE: u64 = u32::from_le_bytes(*b"DELE") as u64;
    match first & 0xffff_ffff {
        POST | PUT | PATCH | DELETE => Some(true),
        _ => None,
    }
}

/// Offset of the first byte at or after `off` that is not a space or tab
/// (at most `MAX_OWS` of them).
#[inline(always)]
fn skip_ows(s: &Scan, mut off: u32) -> u32 {
    for _ in 0..MAX_OWS {
        let b = byte(s.payload, off);
        if b != b' ' && b != b'\t' {
            break;
        }
        off += 1;
    }
    off
}

/// Parses the `Content-Length` value starting at `off` (after the colon):
/// digits between optional whitespace, up to the line's CR. False: give up.
/// Three loops one after the other rather than one that takes any byte in
/// any order: the verifier walks every path through a loop.
#[inline(always)]
fn length_value(s: &mut Scan, off: u32) -> bool {
    let mut off = skip_ows(s, off);
    let mut value: u64 = 0;
    let mut digits = 0u32;
    for _ in 0..MAX_DIGITS {
        let b = byte(s.payload, off);
        if !b.is_ascii_digit() {
            break;
        }
        value = value * 10 + (b - b'0') as u64;
        digits += 1;
        off += 1;
    }
    let end = skip_ows(s, off);
    // Two lengths, even equal ones, are left to user space.
    if digits == 0 || end >= s.limit || byte(s.payload, end) != b'\r' || s.has_length != 0 {
        return false;
    }
    s.has_length = 1;
    // SAFETY: the scratch map value's cursor (see `Scan::cursor`).
    unsafe { core::ptr::write_volatile(&raw mut (*s.cursor).content_length, value) };
    true
}

/// Looks at the header line starting at `off`. False: give up.
#[inline(always)]
fn header_line(s: &mut Scan, off: u32) -> bool {
    if off + 2 > s.limit {
        // The head goes on past what was scanned: it is captured whole.
        return false;
    }
    // Most lines are neither: one byte tells. The blank line too, which may
    // be the last two bytes scanned (a head in its own buffer).
    let first = byte(s.payload, off) | 0x20;
    if first != b'c' && first != b't' {
        return true;
    }
    if off + 16 > s.limit {
        return false;
    }
    let name = word_at(s.payload, off) | CASE;
    if name == lit(b"transfer") {
        return false;
    }
    if name == lit(b"content-") {
        let rest = (word_at(s.payload, off + 8) | CASE) & 0x00ff_ffff_ffff_ffff;
        if rest == lit(b"length:\0") {
            return length_value(s, off + 15);
        }
    }
    true
}

/// A line feed at `pos`. False: stop scanning.
#[inline(always)]
fn line_end(s: &mut Scan, pos: u32) -> bool {
    if pos < 2 || byte(s.payload, pos - 1) != b'\r' {
        s.give_up = 1;
        return false;
    }
    if s.started == 0 {
        // A request line ends with its version.
        if s.request != 0 && (pos < 10 || word_at(s.payload, pos - 10) != lit(b" HTTP/1.")) {
            s.give_up = 1;
            return false;
        }
    } else if cursor_last_lf(s) + 2 == pos {
        s.head_end = pos + 1;
        return false;
    }
    // SAFETY: the scratch map value's cursor (see `Scan::cursor`).
    unsafe { core::ptr::write_volatile(&raw mut (*s.cursor).last_lf, pos) };
    s.started = 1;
    if !header_line(s, pos + 1) {
        s.give_up = 1;
        return false;
    }
    true
}

/// The lowest byte flagged in `t` (flags in bits 7, 15, ..., 63), by a
/// multiplication: BPF has no count-trailing-zeros, and comparisons would
/// be branches, each doubling the paths the verifier walks.
#[inline(always)]
fn lowest_flagged(t: u64) -> u32 {
    let bit = (t & t.wrapping_neg()) >> 7;
    // bit is 1 << 8i; the top byte of BYTE_INDEX << 8i is its byte 7 - i,
    // which holds i.
    const BYTE_INDEX: u64 = 0x0001_0203_0405_0607;
    (bit.wrapping_mul(BYTE_INDEX) >> 56) as u32
}

/// `bpf_loop` callback: moves the cursor past one word without a line feed,
/// or past one line feed, which it handles. 1 stops.
extern "C" fn scan_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer given to it: a Scan.
    let s = unsafe { &mut *(ctx as *mut Scan) };
    // SAFETY: the scratch map value's cursor (see `Scan::cursor`).
    let next = unsafe { &raw mut (*s.cursor).next };
    let pos = unsafe { core::ptr::read_volatile(next) };
    if pos >= s.limit {
        return 1;
    }
    // Up to four words per step: a step costs more than a word.
    let base = pos & !7;
    let mut word = base;
    // Bytes before `pos` are made non-zero rather than masked after the
    // test: a line feed there could flag the byte at `pos` falsely.
    let done = !(u64::MAX << ((pos & 7) * 8));
    let mut t = line_feeds(aligned_word(s.payload, base), ONES & done);
    for _ in 1..WORDS_PER_STEP {
        if t != 0 {
            break;
        }
        word += 8;
        t = line_feeds(aligned_word(s.payload, word), 0);
    }
    if t == 0 {
        unsafe { core::ptr::write_volatile(next, word + 8) };
        return 0;
    }
    unsafe { core::ptr::write_volatile(next, word + lowest_flagged(t) + 1) };
    // Read back from the map: the paths above end here for the verifier,
    // which would otherwise walk the line handling once for each.
    let lf = unsafe { core::ptr::read_volatile(next) } - 1;
    if lf >= s.limit || !line_end(s, lf) {
        return 1;
    }
    0
}

/// Flags (bit 7 of each byte) the line feeds in `word`, but for the bytes
/// set in `skip`. The lowest flag is always a real one; the test may also
/// flag bytes above it, which the scan looks at again from the first.
#[inline(always)]
fn line_feeds(word: u64, skip: u64) -> u64 {
    let x = (word ^ LF_WORD) | skip;
    x.wrapping_sub(ONES) & !x & HIGHS
}

#[inline(always)]
fn cursor_last_lf(s: &Scan) -> u32 {
    // SAFETY: the scratch map value's cursor (see `Scan::cursor`).
    unsafe { core::ptr::read_volatile(&raw const (*s.cursor).last_lf) }
}

/// How much of a `size`-byte syscall to copy before the scan: what it can
/// scan. None: the scan does not run, so everything is copied at once.
#[inline(always)]
pub fn prefix(cap: u32, size: u64) -> Option<u32> {
    if size < MIN_SIZE {
        None
    } else {
        Some(if cap <= MAX_HEAD { cap } else { MAX_HEAD })
    }
}

/// The head's length, when the `captured` bytes in `scratch` of a syscall
/// that moved `size` bytes start an HTTP/1 message whose `Content-Length`
/// body is all the rest: only the head is worth sending.
#[inline(always)]
pub fn head_of_whole_body(scratch: *mut DataScratch, captured: u32, size: u64) -> Option<u32> {
    if size < MIN_SIZE || captured < 16 {
        return None;
    }
    // SAFETY: a pointer into the scratch map value, read only in bounds.
    let payload = unsafe { (*scratch).payload.as_ptr() };
    let request = message_start(aligned_word(payload, 0))?;
    // SAFETY: our per-CPU scratch.
    unsafe { (*scratch).cursor = ScanCursor { next: 0, last_lf: 0, content_length: 0 } };
    let mut scan = Scan {
        payload,
        limit: if captured < MAX_HEAD { captured } else { MAX_HEAD },
        cursor: unsafe { &raw mut (*scratch).cursor },
        started: 0,
        head_end: 0,
        request: request as u32,
        has_length: 0,
        give_up: 0,
    };
    // SAFETY: a helper call with a static callback and our stack struct.
    unsafe { generated::bpf_loop(MAX_STEPS, scan_step as *mut _, (&raw mut scan).cast(), 0) };
    // SAFETY: as above.
    let content_length = unsafe { (*scratch).cursor.content_length };
    let whole_body = scan.give_up == 0
        && scan.head_end != 0
        && scan.has_length != 0
        && content_length > 0
        && scan.head_end as u64 + content_length == size;
    if !whole_body {
        return None;
    }
    count(Counter::BodiesSkipped);
    Some(scan.head_end)
}
