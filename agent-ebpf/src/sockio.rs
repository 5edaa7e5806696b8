//! The socket capture path (Linux >= 6.13 on x86_64), used when the kernel
//! has it. `sock_send_length` and `sock_recv_length` fire inside
//! sock_sendmsg/sock_recvmsg, so only socket I/O pays for them. Syscall
//! tracepoints, by contrast, put every syscall of every task on the host on
//! the kernel's tracing slow path and need a program on both enter and
//! exit: on a busy server that cost a quarter of its CPU.
//!
//! These tracepoints name the sock and the byte count but not the user
//! buffer, so the syscall's own arguments are read back from the registers
//! the task entered the kernel with. `sock_send_length` fires once the bytes
//! are delivered (on loopback, possibly after the peer has read them), so a
//! send's start is taken from `tcp:tcp_sendmsg_locked`: span edges and
//! same-host pairing rely on a send starting before its bytes are read.
//! The connection's end is seen when its sock is destroyed
//! (`tcp:tcp_destroy_sock`), after the owner's last read, or when the peer
//! resets it (`tcp:tcp_receive_reset`).

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::raw_tracepoint, programs::RawTracePointContext};
use kspan_common::{Call, Counter, Direction, Role, Source};

use crate::{
    MSG_ERRQUEUE, MSG_PEEK, capture, conn,
    maps::{KSPAN_SETTINGS, PID_FILTER, PORT_FILTER, PendingCall, SEND_START, SK_CONNS, SK_ROLES, SkKey, count, setting},
    task::{self, SyscallRegs},
    threadctx, tls,
};

/// x86_64 syscall numbers of the calls that move socket data, and connect.
mod nr {
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const READV: u64 = 19;
    pub const WRITEV: u64 = 20;
    pub const SENDFILE: u64 = 40;
    pub const CONNECT: u64 = 42;
    pub const SENDTO: u64 = 44;
    pub const RECVFROM: u64 = 45;
    pub const SENDMSG: u64 = 46;
    pub const RECVMSG: u64 = 47;
    pub const SPLICE: u64 = 275;
    pub const RECVMMSG: u64 = 299;
    pub const SENDMMSG: u64 = 307;
    pub const PREADV2: u64 = 327;
    pub const PWRITEV2: u64 = 328;
}

/// The syscall behind a socket transfer and the fd it names, if any. A
/// transfer in the other direction than the syscall's own (the kernel
/// sending on the task's behalf) names no fd.
#[inline(always)]
fn classify(regs: &SyscallRegs, direction: Direction) -> (Call, Option<i32>) {
    let fd = regs.di as i32;
    let (call, fd) = match regs.orig_ax {
        nr::READ => (Call::Read, Some(fd)),
        nr::WRITE => (Call::Write, Some(fd)),
        // preadv2/pwritev2 with offset -1 work on sockets, like readv/writev.
        nr::READV | nr::PREADV2 => (Call::Readv, Some(fd)),
        nr::WRITEV | nr::PWRITEV2 => (Call::Writev, Some(fd)),
        nr::SENDTO => (Call::Sendto, Some(fd)),
        nr::RECVFROM => (Call::Recvfrom, Some(fd)),
        nr::SENDMSG => (Call::Sendmsg, Some(fd)),
        nr::RECVMSG => (Call::Recvmsg, Some(fd)),
        // The tracepoint fires once per message and does not say which.
        nr::SENDMMSG | nr::RECVMMSG => (Call::Uncaptured, Some(fd)),
        nr::SENDFILE => (Call::Sendfile, Some(fd)),
        nr::SPLICE => (Call::Sendfile, Some(regs.dx as i32)),
        _ => (Call::Uncaptured, None),
    };
    let expected = match call {
        Call::Sendfile => Some(Direction::Egress),
        Call::Uncaptured => None,
        call => call.direction(),
    };
    match expected {
        Some(d) if d != direction => (Call::Uncaptured, None),
        _ => (call, fd),
    }
}

/// `--open-ports` on this path: a process joins the allow-list on its
/// first transfer over a watched port (as server or as client).
#[inline(always)]
fn enroll_by_port(tgid: u32, sk: u64) -> bool {
    if setting(&KSPAN_SETTINGS.port_filter) == 0 || tgid == setting(&KSPAN_SETTINGS.self_tgid) {
        return false;
    }
    if !task::sock_is_tcp(sk).unwrap_or(false) {
        return false;
    }
    let Ok((local, remote)) = task::ports(sk) else {
        return false;
    };
    let watched = |port: u16| unsafe { PORT_FILTER.get(&port) }.is_some();
    if !watched(local) && !watched(remote) {
        return false;
    }
    let _ = PID_FILTER.insert(&tgid, &1, 0);
    crate::should_trace(tgid)
}

/// First transfer of this process on `sk`: a TCP sock reached through the
/// fd the syscall names becomes a connection.
#[inline(always)]
fn learn(key: &SkKey, tid: u32, fd: Option<i32>) -> Option<crate::maps::ConnState> {
    if !task::sock_is_tcp(key.sk).unwrap_or(false) {
        return None;
    }
    let (fd, sock) = match fd.map(|fd| (fd, task::tcp_socket_of_fd(fd))) {
        Some((fd, Ok(Some(sock)))) if sock.sk == key.sk => (fd, sock),
        _ => {
            count(Counter::Unattributed);
            return None;
        }
    };
    let (role, call) = match unsafe { SK_ROLES.get(&key.sk) }.copied() {
        Some(r) if r == Role::Client as u8 => (Role::Client, Call::Connect),
        Some(r) if r == Role::Server as u8 => (Role::Server, Call::Accept),
        // The handshake happened before kspan started.
        _ => (Role::Unknown, Call::FirstData),
    };
    let state = conn::open(key.tgid, tid, fd, &sock, role, call);
    let _ = SK_CONNS.insert(key, &state, 0);
    Some(state)
}

/// A client handshake just completed (`inet_sock_set_state`). When that
/// happens inside the connecting task's own connect() (always on loopback
/// and between namespaces of one host, where the SYN-ACK is processed
/// before connect returns), the connection is announced now. Otherwise a
/// server on this host could read the first request, and have its span
/// started, before the client's first send is even reported, and would not
/// know to wait for its client. Elsewhere it is learnt at its first transfer.
#[inline(always)]
pub fn on_client_established(sk: u64) {
    let (_, tgid, tid) = crate::current();
    if !crate::should_trace(tgid) && !enroll_by_port(tgid, sk) {
        return;
    }
    let Ok(regs) = task::syscall_regs() else {
        return;
    };
    if regs.orig_ax != nr::CONNECT {
        return;
    }
    let key = SkKey { sk, tgid, _pad: 0 };
    if unsafe { SK_CONNS.get(&key) }.is_none() {
        let _ = learn(&key, tid, Some(regs.di as i32));
    }
}

/// The start of the send now finishing on `sk`, taken (so a later send
/// never reuses it) whether or not the send is reported.
#[inline(always)]
fn take_send_start(sk: u64) -> Option<u64> {
    let slot = SEND_START.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; tracepoint programs do not nest on a CPU.
    unsafe {
        if (*slot).sk != sk {
            return None;
        }
        (*slot).sk = 0;
        Some((*slot).ts_ns)
    }
}

fn try_sock_io(ctx: &RawTracePointContext, direction: Direction) -> Result<(), i32> {
    let sk: u64 = ctx.arg(0);
    let ret = ctx.arg::<u64>(1) as i32 as i64;
    let flags: u64 = ctx.arg(2);
    let send_start = if direction == Direction::Egress { take_send_start(sk) } else { None };
    // A peek leaves the bytes queued: they are captured when really read.
    // The error queue carries timestamps and errors, not stream bytes.
    if ret <= 0 || flags & (MSG_PEEK | MSG_ERRQUEUE) != 0 {
        return Ok(());
    }
    let (pid_tgid, tgid, tid) = crate::current();
    if !crate::should_trace(tgid) && !enroll_by_port(tgid, sk) {
        return Ok(());
    }
    let regs = task::syscall_regs()?;
    let (call, fd) = classify(&regs, direction);
    let key = SkKey { sk, tgid, _pad: 0 };
    let state = match unsafe { SK_CONNS.get(&key) } {
        Some(state) => *state,
        None => match learn(&key, tid, fd) {
            Some(state) => state,
            None => return Ok(()),
        },
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let pending = PendingCall {
        fd: state.fd,
        call: call as u8,
        source: Source::Syscall as u8,
        _pad: [0; 2],
        ptr: regs.si,
        count: regs.dx,
        // A send that slept or moved to another CPU midway has no start on
        // record here: its end stands in.
        enter_ns: send_start.filter(|t| *t <= now).unwrap_or(now),
        conn_id: state.conn_id,
    };
    // Ciphertext of a TLS call in flight: the call reports the plaintext.
    if tls::claim(pid_tgid, &pending, direction == Direction::Ingress, || state.role) {
        return Ok(());
    }
    count(Counter::SocketCalls);
    if call.direction().is_some() {
        capture::emit::<true>(&pending, tgid, tid, ret as u64, now, direction);
        threadctx::on_data(&pending, state.role, pid_tgid, direction == Direction::Egress);
    } else {
        capture::emit_gap(&pending, tgid, tid, ret as u64, now, direction);
    }
    Ok(())
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    let _ = try_sock_io(&ctx, Direction::Egress);
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> i32 {
    let _ = try_sock_io(&ctx, Direction::Ingress);
    0
}

/// Fires for each segment a send fills; the first one of a send is its
/// start. Unfiltered: a per-CPU store is cheaper than any filter.
#[raw_tracepoint(tracepoint = "tcp_sendmsg_locked")]
pub fn tcp_sendmsg_locked(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    if let Some(slot) = SEND_START.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; tracepoint programs do not nest on a CPU.
        unsafe {
            if (*slot).sk != sk {
                *slot = crate::maps::SendStart { sk, ts_ns: bpf_ktime_get_ns() };
            }
        }
    }
    0
}

#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: RawTracePointContext) -> i32 {
    conn::on_reset_received(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: RawTracePointContext) -> i32 {
    conn::on_destroy(ctx.arg(0));
    0
}
