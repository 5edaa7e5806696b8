//! TLS plaintext from Go's `crypto/tls` (Go 1.18+ on x86_64): uprobes on
//! `(*Conn).Read` and `(*Conn).Write` copy the application's bytes into the
//! same records the socket path makes, marked `Source::Tls`.
//!
//! Go needs its own programs, for four reasons:
//! - Its register ABI: the receiver and the slice come in RAX, RBX and RCX,
//!   the byte count goes back in RAX, and R14 always holds the running
//!   goroutine.
//! - No uretprobes: they replace the return address on the stack, and the
//!   Go runtime copies stacks when it grows them and walks them for the GC
//!   and for panics. `Read`'s bytes are taken where it copies them out of
//!   the decrypted record (its call to memmove, found by user space), or,
//!   failing that, at each of its RET instructions.
//! - A goroutine can stall between its syscall and its RET (on leaving the
//!   syscall it may have to wait for a free P). A write reported at its RET
//!   could then come after the peer has read it, answered and closed the
//!   connection. So `Write` is reported at its entry, where its bytes are
//!   already final (it writes them all or fails). `Read`'s bytes exist only
//!   once it has decrypted them; a read cannot come late in the same way:
//!   nothing on its connection happens in answer to it before the
//!   goroutine has them.
//! - Goroutines move between threads: one that blocks inside `Read` resumes
//!   on any thread, and its old thread runs other goroutines meanwhile. So
//!   a call is keyed by goroutine, and its connection is not taken from the
//!   thread's socket I/O (as for OpenSSL) but read from the `tls.Conn`
//!   itself: its `net.Conn` is a `*net.TCPConn`, whose `netFD` holds the
//!   socket's fd. Those fields have kept their places since Go 1.9.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use kspan_common::{Call, Counter, Direction, Source};

use crate::{
    capture, conn,
    maps::{CONNS, ConnState, KSPAN_SETTINGS, PendingCall, SK_CONNS, SkKey, count, setting},
    task, threadctx,
};

/// Offsets in x86_64 `struct pt_regs` of the registers Go's ABI uses here.
const REG_R14: usize = 1;
const REG_RBX: usize = 5;
const REG_RAX: usize = 10;
const REG_RCX: usize = 11;

/// `tls.Conn.conn` (a `net.Conn` interface) is the struct's first field;
/// the interface's data pointer is its second word.
const TLS_CONN_NET_CONN_DATA: u64 = 8;
/// `poll.FD.Sysfd`, after the 16-byte `fdMutex`, at the start of `netFD`.
const NETFD_SYSFD: u64 = 16;
/// A real fd is far below this; anything else read through the chain means
/// the `net.Conn` was not a `*net.TCPConn`.
const MAX_FD: i64 = 1 << 24;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoReadKey {
    /// The goroutine (`g` pointer, R14).
    pub goroutine: u64,
    pub tgid: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoRead {
    pub tls_conn: u64,
    pub buf: u64,
    pub enter_ns: u64,
}

/// Reads in flight. LRU: a goroutine blocked in `Read` when its process
/// exits never reaches a RET, and an idle keep-alive connection keeps its
/// reader's entry for as long as it stays open.
#[map]
static GO_TLS_READS: LruHashMap<GoReadKey, GoRead> = LruHashMap::with_max_entries(65536, 0);

#[inline(always)]
fn reg(ctx: &ProbeContext, index: usize) -> u64 {
    // SAFETY: the probe's context is the task's saved user registers; the
    // index is one of the constants above, inside `struct pt_regs`.
    unsafe { *(ctx.regs as *const u64).add(index) }
}

/// What the socket under a `tls.Conn` is.
enum Socket {
    Known(ConnState),
    /// Closed: Go sets the fd to -1, and the call fails without moving bytes.
    Closed,
    Unknown,
}

/// The connection kspan knows for the socket under `tls_conn`.
#[inline(always)]
fn connection(tgid: u32, tls_conn: u64) -> Socket {
    // SAFETY (all reads): user pointers, read with a faulting-safe helper.
    let fd = unsafe {
        bpf_probe_read_user((tls_conn + TLS_CONN_NET_CONN_DATA) as *const u64)
            .and_then(|tcp_conn| bpf_probe_read_user(tcp_conn as *const u64))
            .and_then(|net_fd| bpf_probe_read_user((net_fd + NETFD_SYSFD) as *const i64))
    };
    match fd {
        Ok(-1) => Socket::Closed,
        Ok(fd) if (0..MAX_FD).contains(&fd) => match socket_conn(tgid, fd as i32) {
            Some(conn) => Socket::Known(conn),
            None => Socket::Unknown,
        },
        _ => Socket::Unknown,
    }
}

#[inline(always)]
fn socket_conn(tgid: u32, fd: i32) -> Option<ConnState> {
    if setting(&KSPAN_SETTINGS.sock_capture) == 0 {
        return unsafe { CONNS.get(&conn::fd_key(tgid, fd)) }.copied();
    }
    let sock = task::tcp_socket_of_fd(fd).ok()??;
    unsafe { SK_CONNS.get(&SkKey { sk: sock.sk, tgid, _pad: 0 }) }.copied()
}

/// Reports `bytes` of plaintext at `buf` moved on `tls_conn`.
#[inline(always)]
fn emit(tls_conn: u64, buf: u64, bytes: u64, enter_ns: u64, direction: Direction) {
    let (pid_tgid, tgid, tid) = crate::current();
    let conn = match connection(tgid, tls_conn) {
        Socket::Known(conn) => conn,
        Socket::Closed => return,
        Socket::Unknown => {
            count(Counter::TlsUnattributed);
            return;
        }
    };
    let pending = PendingCall {
        fd: conn.fd,
        call: if direction == Direction::Egress { Call::Write } else { Call::Read } as u8,
        source: Source::Tls as u8,
        _pad: [0; 2],
        ptr: buf,
        count: bytes,
        enter_ns,
        conn_id: conn.conn_id,
    };
    capture::emit::<false>(&pending, tgid, tid, bytes, unsafe { bpf_ktime_get_ns() }, direction);
    threadctx::on_data(&pending, conn.role, pid_tgid, direction == Direction::Egress);
}

/// `(*Conn).Write(b []byte)`: receiver in RAX, `b` in RBX (pointer) and
/// RCX (length).
fn try_write(ctx: &ProbeContext) -> Result<(), i32> {
    let (_, tgid, _) = crate::current();
    if !crate::should_trace(tgid) {
        return Ok(());
    }
    let len = reg(ctx, REG_RCX);
    if len == 0 || len > i64::MAX as u64 {
        return Ok(());
    }
    emit(reg(ctx, REG_RAX), reg(ctx, REG_RBX), len, unsafe { bpf_ktime_get_ns() }, Direction::Egress);
    Ok(())
}

/// `(*Conn).Read(b []byte)`: as `Write`; its byte count comes back in RAX.
fn try_read(ctx: &ProbeContext) -> Result<(), i32> {
    let (_, tgid, _) = crate::current();
    if !crate::should_trace(tgid) {
        return Ok(());
    }
    let key = GoReadKey { goroutine: reg(ctx, REG_R14), tgid, _pad: 0 };
    let read = GoRead { tls_conn: reg(ctx, REG_RAX), buf: reg(ctx, REG_RBX), enter_ns: unsafe { bpf_ktime_get_ns() } };
    GO_TLS_READS.insert(&key, &read, 0).map_err(|e| e as i32)
}

/// The read this goroutine entered, taken out of the table.
#[inline(always)]
fn take_read(ctx: &ProbeContext) -> Option<GoRead> {
    let (_, tgid, _) = crate::current();
    let key = GoReadKey { goroutine: reg(ctx, REG_R14), tgid, _pad: 0 };
    let read = (unsafe { GO_TLS_READS.get(&key) }).copied()?;
    let _ = GO_TLS_READS.remove(&key);
    Some(read)
}

fn try_read_return(ctx: &ProbeContext) -> Result<(), i32> {
    let Some(read) = take_read(ctx) else {
        return Ok(());
    };
    let bytes = reg(ctx, REG_RAX) as i64;
    if bytes > 0 {
        emit(read.tls_conn, read.buf, bytes as u64, read.enter_ns, Direction::Ingress);
    }
    Ok(())
}

#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    let _ = try_write(&ctx);
    0
}

#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    let _ = try_read(&ctx);
    0
}

/// At each RET of `(*Conn).Read`.
#[uprobe]
pub fn go_tls_read_return(ctx: ProbeContext) -> u32 {
    let _ = try_read_return(&ctx);
    0
}

/// At `(*Conn).Read`'s call to `runtime.memmove(dst, src, n)` (RAX, RBX,
/// RCX), which copies the decrypted bytes out to the caller: they are
/// read from `src`, before the copy, with no RET probe needed.
fn try_read_copy(ctx: &ProbeContext) -> Result<(), i32> {
    let Some(read) = take_read(ctx) else {
        return Ok(());
    };
    let bytes = reg(ctx, REG_RCX);
    if bytes > 0 && bytes <= i64::MAX as u64 {
        emit(read.tls_conn, reg(ctx, REG_RBX), bytes, read.enter_ns, Direction::Ingress);
    }
    Ok(())
}

#[uprobe]
pub fn go_tls_read_copy(ctx: ProbeContext) -> u32 {
    let _ = try_read_copy(&ctx);
    0
}
