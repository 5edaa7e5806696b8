//! kspan's kernel programs. Tracepoints for capture: they are the one
//! capture path every kernel offers (no kprobes or fentry needed); uprobes
//! on OpenSSL and Go's crypto/tls for TLS plaintext (`tls`, `gotls`).
//!
//! Two capture paths, chosen by user space: the socket path (`sockio`), and
//! syscall tracepoints for kernels without it. On the syscall path each
//! syscall has an enter program that filters early (pid, netns, "is it a TCP
//! socket") and parks the arguments, and an exit program that copies the
//! bytes the syscall really moved.
#![no_std]
#![no_main]

mod capture;
mod conn;
mod gotls;
mod headonly;
mod inject;
mod maps;
mod sockio;
mod task;
mod threadctx;
mod tls;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use kspan_common::{Call, Counter, Direction, EventKind, FILTER_ALLOW_LIST, ProcEvent, Role, Source};

use crate::maps::{EVENTS, KSPAN_SETTINGS, PENDING, PID_FILTER, PendingCall, count, setting};

const EINPROGRESS: i64 = 115;
pub(crate) const MSG_PEEK: u64 = 0x2;
pub(crate) const MSG_ERRQUEUE: u64 = 0x2000;

#[inline(always)]
pub(crate) fn current() -> (u64, u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    (pid_tgid, (pid_tgid >> 32) as u32, pid_tgid as u32)
}

/// The cheap checks first: most syscalls on a host are not ours to see.
#[inline(always)]
pub(crate) fn should_trace(tgid: u32) -> bool {
    if tgid == setting(&KSPAN_SETTINGS.self_tgid) {
        return false;
    }
    if setting(&KSPAN_SETTINGS.filter_mode) == FILTER_ALLOW_LIST && unsafe { PID_FILTER.get(&tgid) }.is_none() {
        return false;
    }
    let netns = setting(&KSPAN_SETTINGS.netns);
    netns == 0 || task::current_netns() == Ok(netns)
}

#[inline(always)]
fn arg(ctx: &TracePointContext, index: u32) -> Result<u64, i32> {
    let offset = setting(&KSPAN_SETTINGS.layout.args_offset) + index * 8;
    unsafe { ctx.read_at::<u64>(offset as usize) }
}

/// The first three arguments in one read: each `read_at` is a probe-read
/// helper call, and every data syscall needs these three.
#[inline(always)]
fn args3(ctx: &TracePointContext) -> Result<[u64; 3], i32> {
    let offset = setting(&KSPAN_SETTINGS.layout.args_offset);
    unsafe { ctx.read_at::<[u64; 3]>(offset as usize) }
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> Result<i64, i32> {
    let offset = setting(&KSPAN_SETTINGS.layout.ret_offset);
    unsafe { ctx.read_at::<i64>(offset as usize) }
}

fn try_enter_data(ctx: &TracePointContext, call: Call) -> Result<(), i32> {
    let (pid_tgid, tgid, tid) = current();
    if !should_trace(tgid) {
        return Ok(());
    }
    let [fd, ptr, len] = args3(ctx)?;
    // A peek leaves the bytes queued (they are captured when really read);
    // the error queue carries timestamps and errors, not stream bytes.
    let flags = match call {
        Call::Recvfrom => arg(ctx, 3)?,
        Call::Recvmsg => len,
        _ => 0,
    };
    if flags & (MSG_PEEK | MSG_ERRQUEUE) != 0 {
        return Ok(());
    }
    let fd = fd as i32;
    let Some(conn_id) = conn::lookup_or_learn(tgid, tid, fd) else {
        return Ok(());
    };
    count(Counter::SocketCalls);
    let pending = PendingCall {
        fd,
        call: call as u8,
        source: Source::Syscall as u8,
        _pad: [0; 2],
        ptr,
        count: len,
        enter_ns: unsafe { bpf_ktime_get_ns() },
        conn_id,
    };
    PENDING.insert(&pid_tgid, &pending, 0).map_err(|e| e as i32)
}

fn try_exit_data(ctx: &TracePointContext) -> Result<(), i32> {
    let (pid_tgid, tgid, tid) = current();
    let Some(pending) = (unsafe { PENDING.get(&pid_tgid) }).copied() else {
        return Ok(());
    };
    let _ = PENDING.remove(&pid_tgid);
    let ret = ret(ctx)?;
    if pending.call == Call::Sendfile as u8 {
        if ret > 0 {
            capture::emit_gap(&pending, tgid, tid, ret as u64, unsafe { bpf_ktime_get_ns() }, Direction::Egress);
        }
        return Ok(());
    }
    // A call parked by another syscall whose exit we missed is stale.
    let Some(direction) = Call::from_u8(pending.call).and_then(Call::direction) else {
        return Ok(());
    };
    if ret > 0 {
        // Ciphertext of a TLS call in flight: the call reports the plaintext.
        let ingress = direction == Direction::Ingress;
        if tls::claim(pid_tgid, &pending, ingress, || conn::role_of(tgid, pending.fd)) {
            return Ok(());
        }
        capture::emit::<false>(&pending, tgid, tid, ret as u64, unsafe { bpf_ktime_get_ns() }, direction);
        if threadctx::enabled() {
            let egress = direction == Direction::Egress;
            threadctx::on_data(&pending, conn::role_of(tgid, pending.fd), pid_tgid, egress);
        }
    }
    Ok(())
}

/// connect: parked even for processes not yet traced, because
/// `--open-ports` may enroll them on the way out.
fn try_enter_connect(ctx: &TracePointContext) -> Result<(), i32> {
    let (pid_tgid, tgid, _) = current();
    if !should_trace(tgid) && setting(&KSPAN_SETTINGS.port_filter) == 0 {
        return Ok(());
    }
    let pending = PendingCall {
        fd: arg(ctx, 0)? as i32,
        call: Call::Connect as u8,
        source: Source::Syscall as u8,
        _pad: [0; 2],
        ptr: 0,
        count: 0,
        enter_ns: unsafe { bpf_ktime_get_ns() },
        conn_id: 0,
    };
    PENDING.insert(&pid_tgid, &pending, 0).map_err(|e| e as i32)
}

fn try_exit_connect(ctx: &TracePointContext) -> Result<(), i32> {
    let (pid_tgid, tgid, tid) = current();
    let Some(pending) = (unsafe { PENDING.get(&pid_tgid) }).copied() else {
        return Ok(());
    };
    let _ = PENDING.remove(&pid_tgid);
    if pending.call != Call::Connect as u8 {
        return Ok(());
    }
    let ret = ret(ctx)?;
    if ret != 0 && ret != -EINPROGRESS {
        return Ok(());
    }
    conn::enroll_by_port(tgid, pending.fd, Role::Client);
    if should_trace(tgid) {
        conn::learn_new(tgid, tid, pending.fd, Role::Client, Call::Connect);
    }
    Ok(())
}

/// accept needs no enter program: its return value is the new fd. That also
/// catches a server that was already blocked in accept() when kspan started.
fn try_exit_accept(ctx: &TracePointContext) -> Result<(), i32> {
    let (_, tgid, tid) = current();
    let fd = ret(ctx)?;
    if fd < 0 {
        return Ok(());
    }
    conn::enroll_by_port(tgid, fd as i32, Role::Server);
    if should_trace(tgid) {
        conn::learn_new(tgid, tid, fd as i32, Role::Server, Call::Accept);
    }
    Ok(())
}

fn try_close(ctx: &TracePointContext, fd_arg: u32) -> Result<(), i32> {
    let (_, tgid, tid) = current();
    if should_trace(tgid) {
        conn::forget(tgid, tid, arg(ctx, fd_arg)? as i32);
    }
    Ok(())
}

fn emit_proc(kind: EventKind, tgid: u32, tid: u32, child: u32) {
    let Some(mut entry) = EVENTS.reserve::<ProcEvent>(0) else {
        count(Counter::ControlDropped);
        return;
    };
    entry.write(ProcEvent { kind: kind as u8, _pad: [0; 3], tgid, tid, child, ts_ns: unsafe { bpf_ktime_get_ns() } });
    // An exec may enroll the process (--exe-path): its first requests
    // should not wait for a lazy drain.
    let flags = if kind == EventKind::ProcExec {
        crate::maps::urgent_wakeup_flags()
    } else {
        crate::maps::submit_wakeup_flags::<ProcEvent>()
    };
    entry.submit(flags);
}

fn try_fork(ctx: &TracePointContext) -> Result<(), i32> {
    let (_, tgid, tid) = current();
    if !should_trace(tgid) {
        return Ok(());
    }
    let offset = setting(&KSPAN_SETTINGS.fork_child_offset);
    let child: i32 = unsafe { ctx.read_at(offset as usize)? };
    if setting(&KSPAN_SETTINGS.filter_mode) == FILTER_ALLOW_LIST {
        // Children of a traced process are traced (prefork servers). Thread
        // ids land here too and are removed when the thread exits.
        let _ = PID_FILTER.insert(&(child as u32), &1, 0);
    }
    emit_proc(EventKind::ProcFork, tgid, tid, child as u32);
    Ok(())
}

fn try_exit_task() -> Result<(), i32> {
    let (pid_tgid, tgid, tid) = current();
    // A thread that dies inside a traced syscall never reaches its exit.
    let _ = PENDING.remove(&pid_tgid);
    tls::thread_exited(pid_tgid);
    if tid != tgid {
        let _ = PID_FILTER.remove(&tid);
        return Ok(());
    }
    if should_trace(tgid) {
        emit_proc(EventKind::ProcExit, tgid, tid, 0);
    }
    let _ = PID_FILTER.remove(&tgid);
    Ok(())
}

fn try_exec() -> Result<(), i32> {
    let (_, tgid, tid) = current();
    // Unfiltered: an exec may turn an untraced process into one that
    // --exe-path selects.
    if tgid != setting(&KSPAN_SETTINGS.self_tgid) {
        emit_proc(EventKind::ProcExec, tgid, tid, 0);
    }
    Ok(())
}

macro_rules! data_syscall {
    ($enter:ident, $call:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            let _ = try_enter_data(&ctx, $call);
            0
        }
    };
}

/// One program for every data syscall's exit: the parked call says which
/// syscall it was. Loaded once, attached ten times, verified once.
#[tracepoint]
pub fn sys_exit_data(ctx: TracePointContext) -> u32 {
    let _ = try_exit_data(&ctx);
    0
}

data_syscall!(sys_enter_read, Call::Read);
data_syscall!(sys_enter_write, Call::Write);
data_syscall!(sys_enter_readv, Call::Readv);
data_syscall!(sys_enter_writev, Call::Writev);
data_syscall!(sys_enter_sendto, Call::Sendto);
data_syscall!(sys_enter_recvfrom, Call::Recvfrom);
data_syscall!(sys_enter_sendmsg, Call::Sendmsg);
data_syscall!(sys_enter_recvmsg, Call::Recvmsg);
data_syscall!(sys_enter_sendmmsg, Call::Sendmmsg);
data_syscall!(sys_enter_recvmmsg, Call::Recvmmsg);
// The body bytes never pass through user memory: only their count is kept.
data_syscall!(sys_enter_sendfile64, Call::Sendfile);

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = try_enter_connect(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = try_exit_connect(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = try_exit_accept(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    let _ = try_exit_accept(&ctx);
    0
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let _ = try_close(&ctx, 0);
    0
}

/// dup2/dup3 silently close `newfd`: forget what it was.
#[tracepoint]
pub fn sys_enter_dup2(ctx: TracePointContext) -> u32 {
    let _ = try_close(&ctx, 1);
    0
}

#[tracepoint]
pub fn sys_enter_dup3(ctx: TracePointContext) -> u32 {
    let _ = try_close(&ctx, 1);
    0
}

fn try_sock_state(ctx: &TracePointContext) -> Result<(), i32> {
    let layout = &KSPAN_SETTINGS.sock_state;
    let sk: u64 = unsafe { ctx.read_at(setting(&layout.skaddr) as usize)? };
    let old: i32 = unsafe { ctx.read_at(setting(&layout.oldstate) as usize)? };
    let new: i32 = unsafe { ctx.read_at(setting(&layout.newstate) as usize)? };
    conn::on_state_change(sk, old, new);
    Ok(())
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_sock_state(&ctx);
    0
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let _ = try_fork(&ctx);
    0
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let _ = try_exit_task();
    0
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let _ = try_exec();
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
