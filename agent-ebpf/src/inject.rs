//! `--propagate headers`: insert `traceparent` into outgoing plaintext
//! HTTP/1.x requests, so the kspan on the callee's host continues the trace.
//!
//! User memory cannot be written here (no `bpf_probe_write_user`), so the
//! header goes in with sk_msg + `bpf_msg_push_data` on sockets a cgroup
//! sock_ops program put in `SOCK_HASH`. Injection must never corrupt a
//! request: only at a request-line boundary, only when the whole header
//! block is in view and has no `traceparent`, never inside a body, never on
//! non-HTTP streams. In doubt, skip and count.

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, sk_action},
    helpers::{bpf_get_current_pid_tgid, bpf_get_prandom_u32, generated},
    macros::{cgroup_sock_addr, map, sk_msg, sock_ops, stream_verdict},
    maps::{Array, LruHashMap, SockHash},
    programs::{SkBuffContext, SkMsgContext, SockAddrContext, SockOpsContext},
};
use kspan_common::{Counter, EventKind, FILTER_ALLOW_LIST, InjectEvent};

use crate::maps::{EVENTS, KSPAN_SETTINGS, PID_FILTER, THREAD_CTX, THREADLESS, count, setting};

/// Bytes of a message we look at: the request line and headers must fit.
const WINDOW: usize = 1024;
/// `traceparent: 00-<32 hex>-<16 hex>-01\r\n`
const HEADER_LEN: usize = 70;

#[map]
pub static SOCK_HASH: SockHash<u64> = SockHash::with_max_entries(65536, 0);

/// 1 while the kspan that loaded these programs runs. Where the sockhash is
/// pinned so that enrolled sockets outlive kspan (see the agent's
/// `capture/propagate.rs`), their sk_msg program is this one still: at 0 it
/// passes every message through untouched.
#[map]
pub static INJECT_ON: Array<u32> = Array::with_max_entries(1, 0);

/// Per connection (by its 4-tuple hash): where the next message starts.
#[map]
pub static MSG_STATE: LruHashMap<u64, MsgState> = LruHashMap::with_max_entries(65536, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct MsgState {
    /// Body bytes still to come before the next request line.
    pub body_left: u64,
    /// Non-zero: framing unknown (chunked body, pipelining, unparsed
    /// headers): never inject on this connection again.
    pub lost: u8,
    pub _pad: [u8; 7],
}

/// Connections traced processes are opening, by socket cookie: noted by
/// the cgroup connect hooks, which run in connect()'s own context on every
/// kernel (sock_ops programs cannot see the process before 6.x), and
/// enrolled by sock_ops once established, which happens in softirq context
/// where the current task is anyone's.
#[map]
pub static CONNECTING: LruHashMap<u64, u8> = LruHashMap::with_max_entries(16384, 0);

const SOCK_STREAM: u32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn kspan_connect4(ctx: SockAddrContext) -> i32 {
    note_connect(&ctx);
    1
}

#[cgroup_sock_addr(connect6)]
pub fn kspan_connect6(ctx: SockAddrContext) -> i32 {
    note_connect(&ctx);
    1
}

#[inline(always)]
fn note_connect(ctx: &SockAddrContext) {
    // SAFETY: a field of the kernel's bpf_sock_addr for this call.
    let kind = unsafe { core::ptr::read_volatile(&raw const (*ctx.sock_addr).type_) };
    if kind == SOCK_STREAM && is_traced((bpf_get_current_pid_tgid() >> 32) as u32) {
        // SAFETY: helper on the program's own context.
        let cookie = unsafe { generated::bpf_get_socket_cookie(ctx.sock_addr.cast()) };
        let _ = CONNECTING.insert(&cookie, &1, 0);
    }
}

/// Enrols the outgoing connections of traced processes (never kspan's own):
/// only they are injected into, and an enrolled socket's traffic takes the
/// kernel's slower sockmap path.
#[sock_ops]
pub fn kspan_sockops_traced(ctx: SockOpsContext) -> u32 {
    if ctx.op() == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        let key = cookie(&ctx);
        if unsafe { CONNECTING.get(&key) }.is_some() {
            let _ = CONNECTING.remove(&key);
            enrol(&ctx, key);
        }
    }
    1
}

/// Enrols every outgoing connection: where the connect hooks cannot be
/// attached.
#[sock_ops]
pub fn kspan_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        enrol(&ctx, cookie(&ctx));
    }
    1
}

#[inline(always)]
fn cookie(ctx: &SockOpsContext) -> u64 {
    // SAFETY: helper on the program's own context.
    unsafe { generated::bpf_get_socket_cookie(ctx.ops.cast()) }
}

#[inline(always)]
fn enrol(ctx: &SockOpsContext, mut key: u64) {
    let netns = setting_u64(&KSPAN_SETTINGS.propagate_netns_cookie);
    // SAFETY: helper on the program's own context.
    if netns == 0 || unsafe { generated::bpf_get_netns_cookie(ctx.ops.cast()) } == netns {
        // SAFETY: ctx.ops is the kernel's bpf_sock_ops for this call.
        let _ = SOCK_HASH.update(&mut key, unsafe { &mut *ctx.ops }, 0);
    }
}

#[inline(always)]
fn is_traced(tgid: u32) -> bool {
    tgid != setting(&KSPAN_SETTINGS.self_tgid)
        && (setting(&KSPAN_SETTINGS.filter_mode) != FILTER_ALLOW_LIST || unsafe { PID_FILTER.get(&tgid) }.is_some())
}

/// Enrolled sockets take the SK_SKB receive path; with no verdict program,
/// kernels carrying 929e30f93125 lose epoll wakeups and under-report
/// FIONREAD on them. A pass-through verdict avoids that.
#[stream_verdict]
pub fn kspan_skb_verdict(_ctx: SkBuffContext) -> u32 {
    sk_action::SK_PASS
}

#[sk_msg]
pub fn kspan_inject(ctx: SkMsgContext) -> u32 {
    let _ = try_inject(&ctx);
    sk_action::SK_PASS
}

#[inline(always)]
fn setting_u64(field: &u64) -> u64 {
    // SAFETY: `field` points into KSPAN_SETTINGS.
    unsafe { core::ptr::read_volatile(field) }
}

#[inline(always)]
fn byte(ctx: &SkMsgContext, at: usize) -> Option<u8> {
    let p = ctx.data() + at;
    if p + 1 > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds checked against data_end just above.
    Some(unsafe { *(p as *const u8) })
}

/// Case-insensitive match of a lower-case ASCII `pattern` at `at`.
#[inline(always)]
fn header_is<const N: usize>(ctx: &SkMsgContext, at: usize, pattern: &[u8; N]) -> bool {
    for (i, want) in pattern.iter().enumerate() {
        match byte(ctx, at + i) {
            Some(b) if b | 0x20 == *want || b == *want => {}
            _ => return false,
        }
    }
    true
}

/// The verifier only allows ctx loads at constant offsets from the ctx
/// pointer itself; volatile field reads keep LLVM from forming a derived
/// pointer (e.g. to an array field) first.
macro_rules! md {
    ($ctx:expr, $($field:tt)+) => {
        // SAFETY: a field of the kernel's sk_msg_md for this call.
        unsafe { core::ptr::read_volatile(&raw const (*$ctx.msg).$($field)+) }
    };
}

/// Where a connection's messages are: its addresses, from the message.
struct Tuple {
    family: u32,
    local4: u32,
    remote4: u32,
    local6: [u32; 4],
    remote6: [u32; 4],
    local_port: u32,
    remote_port: u32,
}

#[inline(always)]
fn tuple(ctx: &SkMsgContext) -> Tuple {
    Tuple {
        family: md!(ctx, family),
        local4: md!(ctx, local_ip4),
        remote4: md!(ctx, remote_ip4),
        local6: [md!(ctx, local_ip6[0]), md!(ctx, local_ip6[1]), md!(ctx, local_ip6[2]), md!(ctx, local_ip6[3])],
        remote6: [md!(ctx, remote_ip6[0]), md!(ctx, remote_ip6[1]), md!(ctx, remote_ip6[2]), md!(ctx, remote_ip6[3])],
        local_port: md!(ctx, local_port),
        remote_port: md!(ctx, remote_port),
    }
}

#[inline(always)]
fn state_key(t: &Tuple) -> u64 {
    let mut h = (u64::from(t.local_port) << 32) | u64::from(t.remote_port);
    h ^= u64::from(t.remote4).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= u64::from(t.local4).rotate_left(7);
    for w in t.remote6 {
        h = h.rotate_left(13) ^ u64::from(w);
    }
    h ^ u64::from(t.family) << 48
}

fn lose(key: u64) {
    let state = MsgState { body_left: 0, lost: 1, _pad: [0; 7] };
    let _ = MSG_STATE.insert(&key, &state, 0);
}

fn try_inject(ctx: &SkMsgContext) -> Result<(), i32> {
    if INJECT_ON.get(0).copied() != Some(1) {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_traced((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let t = tuple(ctx);
    let key = state_key(&t);
    let size = u64::from(ctx.size());
    if let Some(state) = unsafe { MSG_STATE.get(&key) }.copied() {
        if state.lost != 0 {
            return Ok(());
        }
        if state.body_left > 0 {
            // Inside a body: never inject. A message that runs past the body
            // carries the next request mid-message (pipelining): give up.
            if size > state.body_left {
                lose(key);
            } else {
                let left = MsgState { body_left: state.body_left - size, lost: 0, _pad: [0; 7] };
                let _ = MSG_STATE.insert(&key, &left, 0);
            }
            return Ok(());
        }
    }
    // At a request boundary. Make the first WINDOW bytes linear.
    let pull = if size < WINDOW as u64 { size as u32 } else { WINDOW as u32 };
    // SAFETY: helper on the program's own context.
    unsafe { generated::bpf_msg_pull_data(ctx.msg, 0, pull, 0) };
    if !starts_with_method(ctx) {
        // Not HTTP/1 (or not at a boundary we recognise): leave it alone.
        lose(key);
        return Ok(());
    }
    let Some(scan) = scan_headers(ctx) else {
        count(Counter::InjectSkipped);
        lose(key);
        return Ok(());
    };
    let header_bytes = scan.end as u64;
    let body_in_msg = size.saturating_sub(header_bytes);
    let next = if scan.chunked || body_in_msg > scan.content_length {
        // Chunked framing, or the next request is in this message: we
        // cannot know where the next boundary is.
        MsgState { body_left: 0, lost: 1, _pad: [0; 7] }
    } else {
        MsgState { body_left: scan.content_length - body_in_msg, lost: 0, _pad: [0; 7] }
    };
    let _ = MSG_STATE.insert(&key, &next, 0);
    if scan.has_traceparent {
        return Ok(());
    }
    push_traceparent(ctx, &t, scan.request_line_end, pid_tgid)
}

#[inline(always)]
fn starts_with_method(ctx: &SkMsgContext) -> bool {
    header_is(ctx, 0, b"get ")
        || header_is(ctx, 0, b"post ")
        || header_is(ctx, 0, b"put ")
        || header_is(ctx, 0, b"delete ")
        || header_is(ctx, 0, b"patch ")
        || header_is(ctx, 0, b"head ")
        || header_is(ctx, 0, b"options ")
}

struct Scan {
    /// Offset just after the request line's CRLF.
    request_line_end: usize,
    /// Offset just after the blank line ending the header block.
    end: usize,
    content_length: u64,
    chunked: bool,
    has_traceparent: bool,
}

/// One `bpf_loop` search over the message. Its state changes only on the
/// iteration that ends the search, so the verifier, which simulates a
/// callback until its states converge, converges at once; a plain loop over
/// 1 KiB of packet with per-byte branches exceeds its limits.
#[repr(C)]
struct Search {
    data: usize,
    data_end: usize,
    /// Search `[from, to)`.
    from: usize,
    to: usize,
    /// Offset of the match, or 0.
    found: usize,
}

impl Search {
    #[inline(always)]
    fn new(ctx: &SkMsgContext, from: usize, to: usize) -> Self {
        Self { data: ctx.data(), data_end: ctx.data_end(), from, to, found: 0 }
    }

    #[inline(always)]
    fn byte(&self, at: usize) -> Option<u8> {
        let p = self.data + at;
        if at >= 2 * WINDOW || p + 1 > self.data_end {
            return None;
        }
        // SAFETY: bounds checked against data_end just above.
        Some(unsafe { *(p as *const u8) })
    }

    #[inline(always)]
    fn is<const N: usize>(&self, at: usize, pattern: &[u8; N]) -> bool {
        for (i, want) in pattern.iter().enumerate() {
            match self.byte(at + i) {
                Some(b) if b | 0x20 == *want || b == *want => {}
                _ => return false,
            }
        }
        true
    }

    /// Runs `step` over the range; `found` is what it reported.
    #[inline(always)]
    fn run(mut self, step: extern "C" fn(u64, *mut core::ffi::c_void) -> i64) -> Option<usize> {
        // SAFETY: a helper call with a static callback and our stack struct.
        unsafe { generated::bpf_loop(WINDOW as u32, step as *mut _, (&raw mut self).cast(), 0) };
        (self.found != 0).then_some(self.found)
    }
}

/// The search at iteration `index`, or `None` when it is out of range.
#[inline(always)]
fn search_at<'a>(index: u64, ctx: *mut core::ffi::c_void) -> Option<(&'a mut Search, usize)> {
    // SAFETY: bpf_loop passes back the pointer given to it: a Search.
    let s = unsafe { &mut *(ctx as *mut Search) };
    let i = s.from + index as usize;
    (i < s.to && i < WINDOW).then_some((s, i))
}

/// Finds the end of the first line (offset after its `\n`).
extern "C" fn find_line_end(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let Some((s, i)) = search_at(index, ctx) else { return 1 };
    match s.byte(i) {
        Some(b'\n') => {
            s.found = i + 1;
            1
        }
        Some(_) => 0,
        None => 1,
    }
}

/// Finds the blank line ending the header block (offset after it).
extern "C" fn find_blank_line(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let Some((s, i)) = search_at(index, ctx) else { return 1 };
    if s.byte(i) != Some(b'\n') {
        return 0;
    }
    match (s.byte(i + 1), s.byte(i + 2)) {
        (Some(b'\n'), _) => s.found = i + 2,
        (Some(b'\r'), Some(b'\n')) => s.found = i + 3,
        _ => return 0,
    }
    1
}

macro_rules! header_search {
    ($name:ident, $pattern:expr) => {
        /// Finds the header line (offset of its name), case-insensitively.
        extern "C" fn $name(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
            let Some((s, i)) = search_at(index, ctx) else { return 1 };
            if s.byte(i) == Some(b'\n') && s.is(i + 1, $pattern) {
                s.found = i + 1;
                return 1;
            }
            0
        }
    };
}

header_search!(find_traceparent, b"traceparent:");
header_search!(find_transfer_encoding, b"transfer-encoding:");
header_search!(find_content_length, b"content-length:");

/// Walks the header block within WINDOW. `None` when its end is not in view
/// (a `traceparent` might hide beyond it) or it is malformed.
#[inline(always)]
fn scan_headers(ctx: &SkMsgContext) -> Option<Scan> {
    let request_line_end = Search::new(ctx, 0, WINDOW).run(find_line_end)?;
    let from = request_line_end - 1;
    let end = Search::new(ctx, from, WINDOW).run(find_blank_line)?;
    let mut scan = Scan {
        request_line_end,
        end,
        content_length: 0,
        chunked: Search::new(ctx, from, end).run(find_transfer_encoding).is_some(),
        has_traceparent: Search::new(ctx, from, end).run(find_traceparent).is_some(),
    };
    let Some(at) = Search::new(ctx, from, end).run(find_content_length) else {
        return Some(scan);
    };
    let digits = Search::new(ctx, 0, WINDOW);
    let mut seen = 0;
    for k in 0..24 {
        match digits.byte(at + 15 + k)? {
            // 2^60 bytes is no real body; the bound keeps the arithmetic
            // free of the 128-bit overflow checks BPF cannot do.
            b @ b'0'..=b'9' if scan.content_length < 1 << 60 => {
                scan.content_length = scan.content_length * 10 + u64::from(b - b'0');
                seen += 1;
            }
            b' ' | b'\t' if seen == 0 => {}
            b'\r' | b'\n' if seen > 0 => return Some(scan),
            _ => return None,
        }
    }
    None
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[inline(always)]
fn push_traceparent(ctx: &SkMsgContext, t: &Tuple, at: usize, pid_tgid: u64) -> Result<(), i32> {
    let mut ids = [0u8; 24];
    // The thread's incoming request, if the kernel saw exactly one and the
    // thread stands for it: the injected span joins its trace.
    let threadless = unsafe { THREADLESS.get(&((pid_tgid >> 32) as u32)) }.is_some();
    let known = unsafe { THREAD_CTX.get(&pid_tgid) }.filter(|t| t.ambiguous == 0 && !threadless).map(|t| t.trace_id);
    for chunk in ids.chunks_mut(4) {
        let r = unsafe { bpf_get_prandom_u32() }.to_le_bytes();
        chunk.copy_from_slice(&r);
    }
    if let Some(trace) = known {
        ids[..16].copy_from_slice(&trace);
    }
    let at = ((unsafe { core::ptr::read_volatile(&at) }) & (WINDOW - 1)) as u32;
    ctx.push_data(at, HEADER_LEN as u32, 0)?;
    // The pushed gap is uninitialised kernel memory: make it linear (this
    // points data at it), fill it, and if either fails take it out again so
    // nothing but our header can ever reach the wire.
    // SAFETY: helper on the program's own context.
    let pulled = unsafe { generated::bpf_msg_pull_data(ctx.msg, at, at + HEADER_LEN as u32, 0) } == 0;
    let start = ctx.data();
    if !pulled || start + HEADER_LEN > ctx.data_end() {
        let _ = ctx.pop_data(at, HEADER_LEN as u32, 0);
        count(Counter::InjectSkipped);
        return Err(-1);
    }
    let out = start as *mut u8;
    let mut line = [0u8; HEADER_LEN];
    line[..16].copy_from_slice(b"traceparent: 00-");
    for i in 0..16 {
        line[16 + 2 * i] = HEX[(ids[i] >> 4) as usize];
        line[17 + 2 * i] = HEX[(ids[i] & 15) as usize];
    }
    line[48] = b'-';
    for i in 0..8 {
        line[49 + 2 * i] = HEX[(ids[16 + i] >> 4) as usize];
        line[50 + 2 * i] = HEX[(ids[16 + i] & 15) as usize];
    }
    line[65..70].copy_from_slice(b"-01\r\n");
    // SAFETY: [start, start + HEADER_LEN) checked against data_end above.
    unsafe { core::ptr::copy_nonoverlapping(line.as_ptr(), out, HEADER_LEN) };
    count(Counter::Injected);
    report(t, pid_tgid, &ids);
    Ok(())
}

/// Tells user space which ids went out, so the CLIENT span uses them.
#[inline(always)]
fn report(t: &Tuple, pid_tgid: u64, ids: &[u8; 24]) {
    // remote_port is in network order, shifted into the upper half on
    // little-endian kernels; local_port is in host order.
    let remote_port = if t.remote_port & 0xffff == 0 { t.remote_port >> 16 } else { t.remote_port };
    let mut ev = InjectEvent {
        kind: EventKind::Injected as u8,
        family: t.family as u8,
        local_port: t.local_port as u16,
        remote_port: u16::from_be(remote_port as u16),
        _pad: 0,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _pad2: 0,
        local_addr: [0; 16],
        remote_addr: [0; 16],
        trace_id: [0; 16],
        span_id: [0; 8],
    };
    if t.family == 2 {
        ev.local_addr[..4].copy_from_slice(&t.local4.to_ne_bytes());
        ev.remote_addr[..4].copy_from_slice(&t.remote4.to_ne_bytes());
    } else {
        for i in 0..4 {
            ev.local_addr[4 * i..4 * i + 4].copy_from_slice(&t.local6[i].to_ne_bytes());
            ev.remote_addr[4 * i..4 * i + 4].copy_from_slice(&t.remote6[i].to_ne_bytes());
        }
    }
    ev.trace_id.copy_from_slice(&ids[..16]);
    ev.span_id.copy_from_slice(&ids[16..]);
    match EVENTS.reserve::<InjectEvent>(0) {
        Some(mut entry) => {
            entry.write(ev);
            entry.submit(crate::maps::submit_wakeup_flags::<InjectEvent>());
        }
        None => count(Counter::ControlDropped),
    }
}
