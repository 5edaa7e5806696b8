//! `--propagate headers`: which incoming request each thread is serving, so
//! an injected `traceparent` carries that request's trace id. Kept only
//! while propagation is on.

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_get_smp_processor_id, generated};
use kspan_common::MAX_CAPTURE;
use kspan_common::{Counter, EventKind, Role, ThreadCtxEvent};

use crate::maps::{EVENTS, KSPAN_SETTINGS, PendingCall, SCRATCH, THREAD_CTX, ThreadCtx, count, setting};

#[inline(always)]
pub fn enabled() -> bool {
    setting(&KSPAN_SETTINGS.propagate) != 0
}

/// After a data syscall on a server connection: a read that starts a request
/// opens the thread's context; the response write closes it.
#[inline(always)]
pub fn on_data(pending: &PendingCall, role: u8, pid_tgid: u64, egress: bool) {
    if !enabled() || role != Role::Server as u8 {
        return;
    }
    let current = unsafe { THREAD_CTX.get(&pid_tgid) }.copied();
    if egress {
        if current.is_some_and(|c| c.conn_id == pending.conn_id) {
            let _ = THREAD_CTX.remove(&pid_tgid);
        }
        return;
    }
    if !starts_request() {
        // A head cut over several reads (a sender's segments, a small
        // buffer): its traceparent may be in this part.
        if let Some(ctx) = current.filter(|c| c.head_open != 0 && c.conn_id == pending.conn_id) {
            continue_head(ctx, pid_tgid);
        }
        return;
    }
    // The caller's trace when the request carries one, so what this thread
    // injects downstream stays in it; else a new trace.
    let scan = scan_head(false);
    let trace_id = match scan.trace_id {
        Some(id) => id,
        None => {
            let mut id = [0u8; 16];
            for chunk in id.chunks_mut(4) {
                chunk.copy_from_slice(&unsafe { bpf_get_prandom_u32() }.to_le_bytes());
            }
            id
        }
    };
    let ctx = ThreadCtx {
        trace_id,
        conn_id: pending.conn_id,
        ambiguous: u8::from(current.is_some_and(|c| c.conn_id != pending.conn_id)),
        head_open: u8::from(scan.trace_id.is_none() && !scan.head_ended),
        _pad: [0; 6],
    };
    let _ = THREAD_CTX.insert(&pid_tgid, &ctx, 0);
    announce(pid_tgid, &ctx, false);
}

/// A later read of a head whose first read had no `traceparent`.
#[inline(always)]
fn continue_head(mut ctx: ThreadCtx, pid_tgid: u64) {
    let scan = scan_head(true);
    if let Some(id) = scan.trace_id {
        ctx.trace_id = id;
        ctx.head_open = 0;
        let _ = THREAD_CTX.insert(&pid_tgid, &ctx, 0);
        announce(pid_tgid, &ctx, true);
    } else if scan.head_ended {
        ctx.head_open = 0;
        let _ = THREAD_CTX.insert(&pid_tgid, &ctx, 0);
    }
}

/// Tells user space which trace the thread's request is in.
#[inline(always)]
fn announce(pid_tgid: u64, ctx: &ThreadCtx, update: bool) {
    let Some(mut entry) = EVENTS.reserve::<ThreadCtxEvent>(0) else {
        count(Counter::ControlDropped);
        return;
    };
    entry.write(ThreadCtxEvent {
        kind: EventKind::ThreadCtx as u8,
        update: u8::from(update),
        _pad: [0; 2],
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _pad2: 0,
        conn_id: ctx.conn_id,
        trace_id: ctx.trace_id,
    });
    entry.submit(crate::maps::submit_wakeup_flags::<ThreadCtxEvent>());
}

/// Whether the bytes just captured on this CPU begin with a request line.
#[inline(always)]
fn starts_request() -> bool {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(scratch) = SCRATCH.get_ptr(cpu) else {
        return false;
    };
    // SAFETY: this CPU's slot, filled by capture::emit just before.
    let p = unsafe { &(*scratch).payload };
    let (a, b, c, d) = (p[0], p[1], p[2], p[3]);
    matches!(
        [a, b, c, d],
        [b'G', b'E', b'T', b' ']
            | [b'P', b'O', b'S', b'T']
            | [b'P', b'U', b'T', b' ']
            | [b'D', b'E', b'L', b'E']
            | [b'P', b'A', b'T', b'C']
            | [b'H', b'E', b'A', b'D']
            | [b'O', b'P', b'T', b'I']
    )
}

/// Bytes of a request searched for `traceparent`.
const TP_SCAN: usize = 4096;

#[repr(C)]
struct TpSearch {
    payload: *const u8,
    len: usize,
    /// The bytes continue a head: a line may start at offset 0.
    continued: bool,
    /// Offset of the header value, or 0.
    found: usize,
    /// The blank line ending the head was reached first.
    head_ended: bool,
}

#[inline(always)]
fn at(s: &TpSearch, i: usize) -> u8 {
    // SAFETY: callers keep i < TP_SCAN + 64 < 2 * MAX_CAPTURE, the size of
    // the payload buffer.
    unsafe { *s.payload.add(i & (2 * MAX_CAPTURE - 1)) }
}

/// `bpf_loop` callback: does a header line starting at `index` (after a
/// `\n`, or at 0 in a continued head) name `traceparent`, or end the head?
/// Only the exit iteration changes state, so the verifier converges at once.
extern "C" fn find_traceparent(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer given to it: a TpSearch.
    let s = unsafe { &mut *(ctx as *mut TpSearch) };
    let i = index as usize;
    if i >= TP_SCAN || i + 1 >= s.len {
        return 1;
    }
    let line = if at(s, i) == b'\n' {
        i + 1
    } else if i == 0 && s.continued {
        0
    } else {
        return 0;
    };
    if matches!(at(s, line), b'\r' | b'\n') {
        s.head_ended = true;
        return 1;
    }
    if line + 12 + 36 > s.len {
        return 0;
    }
    const NAME: &[u8; 12] = b"traceparent:";
    for (k, want) in NAME.iter().enumerate() {
        if at(s, line + k) | 0x20 != *want && at(s, line + k) != *want {
            return 0;
        }
    }
    s.found = line + 12;
    1
}

#[inline(always)]
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

struct HeadScan {
    /// From a valid `traceparent`.
    trace_id: Option<[u8; 16]>,
    /// The head's end was in these bytes.
    head_ended: bool,
}

/// Searches the request bytes just captured for `traceparent` up to the end
/// of the head; `continued`: they carry on a head begun in an earlier read.
#[inline(always)]
fn scan_head(continued: bool) -> HeadScan {
    let none = HeadScan { trace_id: None, head_ended: false };
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(scratch) = SCRATCH.get_ptr(cpu) else {
        return none;
    };
    // SAFETY: this CPU's slot, filled by capture::emit just before.
    let (payload, len) = unsafe { ((*scratch).payload.as_ptr(), (*scratch).header.captured as usize) };
    let mut search = TpSearch { payload, len, continued, found: 0, head_ended: false };
    // SAFETY: a helper call with a static callback and our stack struct.
    unsafe { generated::bpf_loop(TP_SCAN as u32, find_traceparent as *mut _, (&raw mut search).cast(), 0) };
    if search.found == 0 {
        return HeadScan { trace_id: None, head_ended: search.head_ended };
    }
    // A traceparent line means the head goes on; its end is not needed.
    HeadScan { trace_id: parse_trace_id(&search), head_ended: false }
}

/// The trace id of the `traceparent` value at `search.found`.
#[inline(always)]
fn parse_trace_id(search: &TpSearch) -> Option<[u8; 16]> {
    // Skip optional whitespace, then "vv-" and 32 lower-case hex digits.
    let mut p = search.found;
    if at(search, p) == b' ' {
        p += 1;
    }
    if at(search, p + 2) != b'-' {
        return None;
    }
    p += 3;
    let mut id = [0u8; 16];
    let mut nonzero = false;
    for k in 0..16 {
        let hi = hex_val(at(search, p + 2 * k))?;
        let lo = hex_val(at(search, p + 2 * k + 1))?;
        id[k] = hi << 4 | lo;
        nonzero |= id[k] != 0;
    }
    nonzero.then_some(id)
}
