//! `--propagate headers`: which incoming request each thread is serving, so
//! an injected `traceparent` carries that request's trace id. Kept only
//! while propagation is on.

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_get_smp_processor_id};
use kspan_common::{Counter, EventKind, Role, ThreadCtxEvent};

use crate::{
    conn::fd_key,
    maps::{CONNS, EVENTS, KSPAN_SETTINGS, PendingCall, SCRATCH, THREAD_CTX, ThreadCtx, count, setting},
};

/// After a data syscall on a server connection: a read that starts a request
/// opens the thread's context; the response write closes it.
#[inline(always)]
pub fn on_data(pending: &PendingCall, pid_tgid: u64, egress: bool) {
    if setting(&KSPAN_SETTINGS.propagate) == 0 {
        return;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let Some(state) = (unsafe { CONNS.get(&fd_key(tgid, pending.fd)) }).copied() else {
        return;
    };
    if state.role != Role::Server as u8 {
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
        return;
    }
    let mut trace_id = [0u8; 16];
    for chunk in trace_id.chunks_mut(4) {
        chunk.copy_from_slice(&unsafe { bpf_get_prandom_u32() }.to_le_bytes());
    }
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
    entry.submit(0);
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
