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
    let tgid = (pid_tgid >> 32) as u32;
    let current = unsafe { THREAD_CTX.get(&pid_tgid) }.copied();
    if egress {
        if current.is_some_and(|c| c.conn_id == pending.conn_id) {
            let _ = THREAD_CTX.remove(&pid_tgid);
        }
        return;
    }
    if !starts_request() {
        return;
    }
    // The caller's trace when the request carries one, so what this thread
    // injects downstream stays in it; else a new trace.
    let trace_id = match incoming_trace_id() {
        Some(id) => id,
        None => {
            let mut id = [0u8; 16];
            for chunk in id.chunks_mut(4) {
                chunk.copy_from_slice(&unsafe { bpf_get_prandom_u32() }.to_le_bytes());
            }
            id
        }
    };
    let ambiguous = current.is_some_and(|c| c.conn_id != pending.conn_id);
    let ctx = ThreadCtx { trace_id, conn_id: pending.conn_id, ambiguous: u8::from(ambiguous), _pad: [0; 7] };
    let _ = THREAD_CTX.insert(&pid_tgid, &ctx, 0);
    let Some(mut entry) = EVENTS.reserve::<ThreadCtxEvent>(0) else {
        count(Counter::ControlDropped);
        return;
    };
    entry.write(ThreadCtxEvent {
        kind: EventKind::ThreadCtx as u8,
        _pad: [0; 3],
        tgid,
        tid: pid_tgid as u32,
        _pad2: 0,
        conn_id: pending.conn_id,
        trace_id,
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
    /// Offset of the header value, or 0.
    found: usize,
}

#[inline(always)]
fn at(s: &TpSearch, i: usize) -> u8 {
    // SAFETY: callers keep i < TP_SCAN + 64 < 2 * MAX_CAPTURE, the size of
    // the payload buffer.
    unsafe { *s.payload.add(i & (2 * MAX_CAPTURE - 1)) }
}

/// `bpf_loop` callback: a `\ntraceparent:` header line at `index`? Only
/// the exit iteration changes state, so the verifier converges at once.
extern "C" fn find_traceparent(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer given to it: a TpSearch.
    let s = unsafe { &mut *(ctx as *mut TpSearch) };
    let i = index as usize;
    if i >= TP_SCAN || i + 13 + 36 > s.len {
        return 1;
    }
    if at(s, i) != b'\n' {
        return 0;
    }
    const NAME: &[u8; 12] = b"traceparent:";
    for (k, want) in NAME.iter().enumerate() {
        if at(s, i + 1 + k) | 0x20 != *want && at(s, i + 1 + k) != *want {
            return 0;
        }
    }
    s.found = i + 13;
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

/// The trace id of a valid `traceparent` in the request just captured.
#[inline(always)]
fn incoming_trace_id() -> Option<[u8; 16]> {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let scratch = SCRATCH.get_ptr(cpu)?;
    // SAFETY: this CPU's slot, filled by capture::emit just before.
    let (payload, len) = unsafe { ((*scratch).payload.as_ptr(), (*scratch).header.captured as usize) };
    let mut search = TpSearch { payload, len, found: 0 };
    // SAFETY: a helper call with a static callback and our stack struct.
    unsafe { generated::bpf_loop(TP_SCAN as u32, find_traceparent as *mut _, (&raw mut search).cast(), 0) };
    if search.found == 0 {
        return None;
    }
    // Skip optional whitespace, then "vv-" and 32 lower-case hex digits.
    let mut p = search.found;
    if at(&search, p) == b' ' {
        p += 1;
    }
    if at(&search, p + 2) != b'-' {
        return None;
    }
    p += 3;
    let mut id = [0u8; 16];
    let mut nonzero = false;
    for k in 0..16 {
        let hi = hex_val(at(&search, p + 2 * k))?;
        let lo = hex_val(at(&search, p + 2 * k + 1))?;
        id[k] = hi << 4 | lo;
        nonzero |= id[k] != 0;
    }
    nonzero.then_some(id)
}
