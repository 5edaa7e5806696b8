//! Copies the bytes a socket syscall moved into a `DataEvent` record.

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_probe_read_user, generated};
use kspan_common::{
    Call, Counter, DATA_EVENT_SIZE, Direction, EventKind, FLAG_TRUNCATED, MAX_CAPTURE, MAX_IOVECS, MAX_MMSG,
    MAX_MMSG_IOVECS,
};

use crate::headonly;
use crate::maps::{DataScratch, EVENTS, KSPAN_SETTINGS, PendingCall, SCRATCH, count, setting};

/// Byte offsets in the x86_64 user ABI (stable: it is the syscall ABI).
pub(crate) const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;
const MMSGHDR_SIZE: u64 = 64;
const MMSGHDR_LEN: u64 = 56;
const IOVEC_SIZE: u64 = 16;

/// Copies `len` bytes of user memory to `payload[off..]`.
///
/// The bounds are for the verifier: `off < MAX_CAPTURE` and
/// `len <= MAX_CAPTURE` keep the write inside the 2 * MAX_CAPTURE buffer.
/// The volatile loads stop LLVM from dropping a mask it can prove redundant:
/// the verifier cannot prove it, having lost track across registers.
#[inline(always)]
fn copy_user(scratch: *mut DataScratch, off: u32, src: u64, len: u32) -> bool {
    let off = unsafe { core::ptr::read_volatile(&off) } as usize & (MAX_CAPTURE - 1);
    let mut len = unsafe { core::ptr::read_volatile(&len) } as usize & (2 * MAX_CAPTURE - 1);
    if len > MAX_CAPTURE {
        len = MAX_CAPTURE;
    }
    // SAFETY: bounds shown above; bpf_probe_read_user faults safely.
    unsafe {
        let dst = (*scratch).payload.as_mut_ptr().add(off);
        generated::bpf_probe_read_user(dst.cast(), len as u32, src as *const _) == 0
    }
}

/// Walks an iovec array, copying up to `cap` bytes of the `total` the
/// syscall moved. Returns bytes captured.
#[inline(always)]
fn copy_iovecs<const MAX: u64>(scratch: *mut DataScratch, iov: u64, iovcnt: u64, total: u64, cap: u32) -> u32 {
    let mut captured: u32 = 0;
    let mut left = total;
    for i in 0..MAX {
        if i >= iovcnt || left == 0 || captured >= cap {
            break;
        }
        // SAFETY: user pointer, read with a faulting-safe helper.
        let Ok(vec) = (unsafe { bpf_probe_read_user((iov + i * IOVEC_SIZE) as *const [u64; 2]) }) else {
            count(Counter::ReadErrors);
            break;
        };
        let len = if vec[1] < left { vec[1] } else { left };
        left -= len;
        let room = (cap - captured) as u64;
        let take = if len < room { len } else { room } as u32;
        if !copy_user(scratch, captured, vec[0], take) {
            count(Counter::ReadErrors);
            break;
        }
        captured += take;
    }
    captured
}

/// iovecs walked at most per call with `bpf_loop` (IOV_MAX): a gRPC client
/// batching many calls into one sendmsg easily passes the unrolled loop's
/// bound, and the requests past it were lost.
const MAX_LOOP_IOVECS: u32 = 1024;

#[repr(C)]
struct IovWalk {
    scratch: *mut DataScratch,
    iov: u64,
    iovcnt: u64,
    /// Bytes of the syscall not yet walked past.
    left: u64,
    /// Stream offset walked past so far.
    pos: u64,
    /// Copying starts at this stream offset (bytes before it are already in
    /// the payload) ...
    from: u32,
    /// ... and stops at this one.
    cap: u32,
    /// Payload filled up to here.
    captured: u32,
    failed: u32,
    /// Stop after the first iovec that had bytes to copy.
    first_only: u32,
}

/// `bpf_loop` callback: copies what iovec `index` holds of the range being
/// copied; 1 stops the walk.
extern "C" fn copy_one_iovec(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer given to it: an IovWalk.
    let w = unsafe { &mut *(ctx as *mut IovWalk) };
    if index >= w.iovcnt || w.left == 0 || w.captured >= w.cap {
        return 1;
    }
    // SAFETY: user pointer, read with a faulting-safe helper.
    let Ok(vec) = (unsafe { bpf_probe_read_user((w.iov + index * IOVEC_SIZE) as *const [u64; 2]) }) else {
        w.failed = 1;
        return 1;
    };
    let len = if vec[1] < w.left { vec[1] } else { w.left };
    w.left -= len;
    let start = w.pos;
    w.pos += len;
    if w.pos <= w.from as u64 {
        return 0;
    }
    // Part of this iovec may lie before the range.
    let skip = if start < w.from as u64 { w.from as u64 - start } else { 0 };
    let room = (w.cap - w.captured) as u64;
    let rest = len - skip;
    let take = if rest < room { rest } else { room } as u32;
    if take > 0 && !copy_user(w.scratch, w.captured, vec[0] + skip, take) {
        w.failed = 1;
        return 1;
    }
    w.captured += take;
    if w.first_only != 0 { 1 } else { 0 }
}

/// Like `copy_iovecs`, through `bpf_loop` (Linux >= 5.17, so only on the
/// socket capture path): as many iovecs as a syscall may pass, for the cost
/// of verifying one. Copies the syscall's bytes `from..cap` (and no further
/// than the `total` it moved) to the same offsets of the payload; returns
/// the offset the payload is filled to.
#[inline(always)]
fn copy_iovecs_loop(
    scratch: *mut DataScratch,
    iov: u64,
    iovcnt: u64,
    total: u64,
    from: u32,
    cap: u32,
    first_only: bool,
) -> u32 {
    let first_only = first_only as u32;
    let mut walk = IovWalk { scratch, iov, iovcnt, left: total, pos: 0, from, cap, captured: from, failed: 0, first_only };
    // SAFETY: a helper call with a static callback and our stack struct.
    unsafe { generated::bpf_loop(MAX_LOOP_IOVECS, copy_one_iovec as *mut _, (&raw mut walk).cast(), 0) };
    if walk.failed != 0 {
        count(Counter::ReadErrors);
    }
    walk.captured
}

/// Emits the record(s) for a finished data syscall that returned `ret > 0`,
/// moving bytes in `direction` (the caller has it from `Call::direction`).
/// `LOOP`: walk iovecs with `bpf_loop` (socket path) rather than a bounded
/// unrolled loop (syscall path, for kernels older than bpf_loop).
#[inline(always)]
pub fn emit<const LOOP: bool>(
    pending: &PendingCall,
    tgid: u32,
    tid: u32,
    ret: u64,
    exit_ns: u64,
    direction: Direction,
) {
    // Syscall tracepoint programs run with migration disabled, so the slot
    // stays ours for the whole program.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(scratch) = SCRATCH.get_ptr_mut(cpu) else {
        return;
    };
    let mut cap = setting(&KSPAN_SETTINGS.capture_size);
    if cap > MAX_CAPTURE as u32 {
        cap = MAX_CAPTURE as u32;
    }
    let call = pending.call;
    if call == Call::Sendmmsg as u8 || call == Call::Recvmmsg as u8 {
        // ret counts messages; each carries its own length.
        for i in 0..MAX_MMSG as u64 {
            if i >= ret {
                break;
            }
            let hdr = pending.ptr + i * MMSGHDR_SIZE;
            let (Ok(iov), Ok(iovlen), Ok(len)) = (unsafe {
                (
                    bpf_probe_read_user((hdr + MSGHDR_IOV) as *const u64),
                    bpf_probe_read_user((hdr + MSGHDR_IOVLEN) as *const u64),
                    bpf_probe_read_user((hdr + MMSGHDR_LEN) as *const u32),
                )
            }) else {
                count(Counter::ReadErrors);
                return;
            };
            let captured = copy_iovecs::<{ MAX_MMSG_IOVECS as u64 }>(scratch, iov, iovlen, len as u64, cap);
            submit(scratch, pending, tgid, tid, len as u64, captured, exit_ns, direction);
        }
        return;
    }
    // Where the bytes are: an iovec array, or one buffer.
    let (iov, iovcnt) = if call == Call::Readv as u8 || call == Call::Writev as u8 {
        (Some(pending.ptr), pending.count)
    } else if call == Call::Sendmsg as u8 || call == Call::Recvmsg as u8 {
        let (Ok(iov), Ok(iovlen)) = (unsafe {
            (
                bpf_probe_read_user((pending.ptr + MSGHDR_IOV) as *const u64),
                bpf_probe_read_user((pending.ptr + MSGHDR_IOVLEN) as *const u64),
            )
        }) else {
            count(Counter::ReadErrors);
            return;
        };
        (Some(iov), iovlen)
    } else {
        (None, 0)
    };
    // Copies the syscall's bytes `from..to` to the same payload offsets, or
    // (`first_only`) as far as the first buffer holding any of them goes;
    // returns the offset the payload is filled to.
    let copy = |from: u32, to: u32, first_only: bool| -> u32 {
        match iov {
            Some(iov) if LOOP => copy_iovecs_loop(scratch, iov, iovcnt, ret, from, to, first_only),
            // The syscall path always copies from 0.
            Some(iov) => copy_iovecs::<{ MAX_IOVECS as u64 }>(scratch, iov, iovcnt, ret, to),
            None => {
                let end = if ret < to as u64 { ret as u32 } else { to };
                if end > from && copy_user(scratch, from, pending.ptr + from as u64, end - from) { end } else { from }
            }
        }
    };
    if !LOOP {
        // The head scan needs bpf_loop, which only the socket path's
        // kernels are sure to have.
        submit(scratch, pending, tgid, tid, ret, copy(0, cap, false), exit_ns, direction);
        return;
    }
    // The head first, from the first buffer alone: a server writing its
    // head and body from two buffers (nginx) then never has the body copied
    // when the scan can vouch that it is all body. Each copy is a helper
    // call that costs more than the bytes it moves, so the calls saved count
    // more than the bytes. A head split over several buffers is captured
    // whole, as is anything the scan is unsure of.
    let captured = match headonly::prefix(cap, ret) {
        None => copy(0, cap, false),
        Some(prefix) => {
            let first = copy(0, prefix, true);
            let whole = if ret < cap as u64 { ret as u32 } else { cap };
            match headonly::head_of_whole_body(scratch, first, ret) {
                Some(head) => head,
                None if first < whole => copy(first, cap, false),
                None => first,
            }
        }
    };
    submit(scratch, pending, tgid, tid, ret, captured, exit_ns, direction);
}

/// A record of `size` bytes moved that kspan cannot copy (see `Call::Sendfile`
/// and `Call::Uncaptured`): the stream learns of the gap.
#[inline(always)]
pub fn emit_gap(pending: &PendingCall, tgid: u32, tid: u32, size: u64, exit_ns: u64, direction: Direction) {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if let Some(scratch) = SCRATCH.get_ptr_mut(cpu) {
        submit(scratch, pending, tgid, tid, size, 0, exit_ns, direction);
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn submit(
    scratch: *mut DataScratch,
    pending: &PendingCall,
    tgid: u32,
    tid: u32,
    size: u64,
    captured: u32,
    exit_ns: u64,
    direction: Direction,
) {
    let mut captured = captured as usize;
    if captured > MAX_CAPTURE {
        captured = MAX_CAPTURE;
    }
    // SAFETY: per-CPU scratch, only this program touches it on this CPU.
    unsafe {
        let h = &mut (*scratch).header;
        h.kind = EventKind::Data as u8;
        h.direction = direction as u8;
        h.source = pending.source;
        h.call = pending.call;
        h.flags = if (captured as u64) < size { FLAG_TRUNCATED } else { 0 };
        h._pad = [0; 3];
        h.tgid = tgid;
        h.tid = tid;
        h.fd = pending.fd;
        h.captured = captured as u32;
        h.conn_id = pending.conn_id;
        h.enter_ns = pending.enter_ns;
        h.exit_ns = exit_ns;
        h.size = size;
        let record = core::slice::from_raw_parts(scratch as *const u8, DATA_EVENT_SIZE + captured);
        let flags = crate::maps::output_wakeup_flags((DATA_EVENT_SIZE + captured + 8) as u64);
        if EVENTS.output::<[u8]>(record, flags).is_err() {
            count(Counter::RingbufDropped);
        }
    }
}
