//! TLS plaintext from OpenSSL (libssl): uprobes on `SSL_read`/`SSL_write`
//! and their `_ex` forms copy the application's bytes after decryption and
//! before encryption, into the same records the socket path makes, marked
//! `Source::Tls`.
//!
//! The connection is the one the call's own socket I/O goes to: while a
//! call is in flight on a thread, the socket programs hand it their
//! connection instead of reporting the ciphertext. A call that does no
//! socket I/O (the bytes were already decrypted, or the write was buffered)
//! uses the connection its `SSL` object was last seen on.
//!
//! Libraries that move the ciphertext themselves, through memory BIOs
//! (Node.js, Python's asyncio), do no socket I/O inside these calls. Once a
//! thread has made a call, its socket reads outside calls are watched: a
//! read that starts with a TLS record header, followed by a read or
//! handshake call on the same thread, ties that call's `SSL` to the read's
//! connection (the event loop decrypts what it has just read). A write goes
//! where its `SSL` was last seen; the record just read stands in only for
//! an `SSL` not seen before. What still has no connection is counted as
//! `TlsUnattributed`.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap},
    programs::{ProbeContext, RetProbeContext},
};
use kspan_common::{Call, Counter, Direction, Source};

use crate::{
    capture,
    maps::{PendingCall, count},
    threadctx,
};

/// A TLS call between its entry and return.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    pub ssl: u64,
    pub buf: u64,
    /// `SSL_read_ex`/`SSL_write_ex`: where the byte count is written (their
    /// return value is only success or failure). 0 for the plain forms.
    pub count_ptr: u64,
    pub enter_ns: u64,
    /// The connection the call's socket I/O went to; 0 until it does any.
    pub conn_id: u64,
    pub fd: i32,
    pub role: u8,
    /// A `Direction`; 0 for a handshake (it moves no application bytes,
    /// but its socket I/O names the connection of its `SSL`).
    pub direction: u8,
    pub _pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslKey {
    pub ssl: u64,
    pub tgid: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslConn {
    pub conn_id: u64,
    pub fd: i32,
    pub role: u8,
    pub _pad: [u8; 3],
}

impl SslConn {
    const NONE: SslConn = SslConn { conn_id: 0, fd: -1, role: 0, _pad: [0; 3] };
}

/// A thread's last socket read outside TLS calls: its connection, and the
/// buffer and call it read with, for `bio_bind` to look at.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BioRead {
    pub conn: SslConn,
    pub buf: u64,
    pub call: u8,
    pub _pad: [u8; 7],
}

impl BioRead {
    const NONE: BioRead = BioRead { conn: SslConn::NONE, buf: 0, call: 0, _pad: [0; 7] };
}

/// Calls in flight, by pid_tgid. Removed at return and at thread exit.
#[map]
pub static TLS_CALLS: HashMap<u64, TlsCall> = HashMap::with_max_entries(16384, 0);

/// The connection each `SSL` object was last seen doing socket I/O on.
#[map]
pub static SSL_CONNS: LruHashMap<SslKey, SslConn> = LruHashMap::with_max_entries(65536, 0);

/// Threads that made a TLS call, by pid_tgid: the thread's last socket
/// read outside a call, until a read or handshake call takes it, else
/// `BioRead::NONE`. Only memory-BIO libraries read their records outside
/// the calls.
#[map]
static BIO_THREADS: LruHashMap<u64, BioRead> = LruHashMap::with_max_entries(4096, 0);

/// Set once a traced process has made a TLS call, so the socket programs
/// look `TLS_CALLS` up only where there can be something in it: a traced
/// service that never uses OpenSSL pays one array read per transfer, not a
/// hash lookup. (A count of calls in flight would clear it again, but the
/// BPF target has no atomic read-modify-write in Rust's `core`.)
#[map]
static TLS_SEEN: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
fn tls_seen() -> bool {
    TLS_SEEN.get(0).is_some_and(|seen| *seen != 0)
}

const HANDSHAKE: u8 = 0;

fn try_enter(ctx: &ProbeContext, direction: u8, ex: bool) -> Result<(), i32> {
    let (pid_tgid, tgid, _) = crate::current();
    if !crate::should_trace(tgid) {
        return Ok(());
    }
    // A handshake run from inside a read or write belongs to that call.
    if direction == HANDSHAKE && unsafe { TLS_CALLS.get(&pid_tgid) }.is_some_and(|c| c.direction != HANDSHAKE) {
        return Ok(());
    }
    let call = TlsCall {
        ssl: ctx.arg(0).ok_or(1)?,
        buf: if direction == HANDSHAKE { 0 } else { ctx.arg(1).ok_or(1)? },
        count_ptr: if ex { ctx.arg(3).ok_or(1)? } else { 0 },
        enter_ns: unsafe { bpf_ktime_get_ns() },
        conn_id: 0,
        fd: -1,
        role: 0,
        direction,
        _pad: [0; 2],
    };
    TLS_CALLS.insert(&pid_tgid, &call, 0).map_err(|e| e as i32)?;
    bio_bind(pid_tgid, tgid, call.ssl, direction);
    if !tls_seen()
        && let Some(seen) = TLS_SEEN.get_ptr_mut(0)
    {
        // SAFETY: a map value; a racing store writes the same value.
        unsafe { *seen = 1 };
    }
    Ok(())
}

/// Socket I/O by the current thread (`pending`, its bytes already moved):
/// when a TLS call is in flight on it, the call takes the connection and
/// the bytes (ciphertext) are not reported. On a thread that makes TLS
/// calls, a read outside them is remembered for the next call
/// (`bio_bind`). `role` is asked only when needed. Whether the read began
/// a TLS record is left for that call to check: reading user memory here,
/// in the socket programs, made `sock_recv_length` with `--propagate
/// headers` on too big for the verifier (E2BIG), and kspan fell back to the
/// syscall path.
#[inline(always)]
pub fn claim(pid_tgid: u64, pending: &PendingCall, ingress: bool, role: impl FnOnce() -> u8) -> bool {
    if !tls_seen() {
        return false;
    }
    if let Some(call) = TLS_CALLS.get_ptr_mut(&pid_tgid) {
        // SAFETY: this thread's entry; only this thread writes it.
        unsafe {
            (*call).conn_id = pending.conn_id;
            (*call).fd = pending.fd;
            (*call).role = role();
        }
        return true;
    }
    if ingress && let Some(thread) = BIO_THREADS.get_ptr_mut(&pid_tgid) {
        let conn = SslConn { conn_id: pending.conn_id, fd: pending.fd, role: role(), _pad: [0; 3] };
        // SAFETY: this thread's entry; only this thread writes it.
        unsafe { *thread = BioRead { conn, buf: pending.ptr, call: pending.call, _pad: [0; 7] } };
    }
    false
}

/// Whether the bytes a read delivered into `buf` begin with a TLS record
/// header: content type 20..=23 (change_cipher_spec, alert, handshake,
/// application_data) and version 3.x. Plain protocols do not begin so.
#[inline(always)]
fn starts_tls_record(buf: u64, call: u8) -> bool {
    // SAFETY (all reads): user pointers, read with a faulting-safe helper;
    // an iovec's base is its first field.
    let first = match Call::from_u8(call) {
        Some(Call::Read | Call::Recvfrom) => Some(buf),
        Some(Call::Readv) => unsafe { bpf_probe_read_user(buf as *const u64) }.ok(),
        Some(Call::Recvmsg) => unsafe { bpf_probe_read_user((buf + capture::MSGHDR_IOV) as *const u64) }
            .ok()
            .and_then(|iov| unsafe { bpf_probe_read_user(iov as *const u64) }.ok()),
        _ => None,
    };
    let Some(Ok(header)) = first.map(|at| unsafe { bpf_probe_read_user(at as *const [u8; 3]) }) else {
        return false;
    };
    (20..=23).contains(&header[0]) && header[1] == 3 && header[2] <= 4
}

/// A call is entering on this thread: from now on the thread's socket
/// reads outside calls are remembered (see `claim`). If the thread's last
/// one began a TLS record (its buffer still holds it: the event loop
/// decrypts what it has just read), a read or handshake call takes it (its
/// `SSL` is tied to that connection, and the record to no other call); a
/// write is tied to it only when its `SSL` was never seen, as when Node.js
/// flushes a client's first request from the call that completes the
/// handshake. Done at entry, not return, to keep the return program,
/// which copies the bytes, small enough for older verifiers (6.1).
#[inline(always)]
fn bio_bind(pid_tgid: u64, tgid: u32, ssl: u64, direction: u8) {
    let Some(thread) = BIO_THREADS.get_ptr_mut(&pid_tgid) else {
        let _ = BIO_THREADS.insert(&pid_tgid, &BioRead::NONE, 0);
        return;
    };
    // SAFETY: this thread's entry; only this thread writes it.
    let read = unsafe { *thread };
    if read.conn.conn_id == 0 {
        return;
    }
    let key = SslKey { ssl, tgid, _pad: 0 };
    if direction == Direction::Egress as u8 {
        if unsafe { SSL_CONNS.get(&key) }.is_some() {
            return;
        }
    } else {
        // SAFETY: as above.
        unsafe { *thread = BioRead::NONE };
    }
    if starts_tls_record(read.buf, read.call) {
        let _ = SSL_CONNS.insert(&key, &read.conn, 0);
    }
}

/// A thread died: a call it was inside never returns.
#[inline(always)]
pub fn thread_exited(pid_tgid: u64) {
    if tls_seen() {
        let _ = TLS_CALLS.remove(&pid_tgid);
        let _ = BIO_THREADS.remove(&pid_tgid);
    }
}

fn try_return(ctx: &RetProbeContext) -> Result<(), i32> {
    let (pid_tgid, tgid, tid) = crate::current();
    let Some(call) = (unsafe { TLS_CALLS.get(&pid_tgid) }).copied() else {
        return Ok(());
    };
    let _ = TLS_CALLS.remove(&pid_tgid);
    let key = SslKey { ssl: call.ssl, tgid, _pad: 0 };
    if call.direction == HANDSHAKE {
        // Whatever the outcome: a non-blocking handshake returns before it
        // is done, and its socket I/O already named the connection. The
        // first request often arrives with the handshake's last message,
        // so the first SSL_read finds it decrypted and does no I/O itself.
        if call.conn_id != 0 {
            let conn = SslConn { conn_id: call.conn_id, fd: call.fd, role: call.role, _pad: [0; 3] };
            let _ = SSL_CONNS.insert(&key, &conn, 0);
        }
        return Ok(());
    }
    let rc = ctx.ret::<u64>() as i32;
    let bytes = if call.count_ptr != 0 {
        if rc != 1 {
            return Ok(());
        }
        // SAFETY: user pointer, read with a faulting-safe helper.
        unsafe { bpf_probe_read_user(call.count_ptr as *const u64) }.map_err(|e| e as i32)?
    } else if rc > 0 {
        rc as u64
    } else {
        return Ok(());
    };
    if bytes == 0 {
        return Ok(());
    }
    let conn = if call.conn_id != 0 {
        let conn = SslConn { conn_id: call.conn_id, fd: call.fd, role: call.role, _pad: [0; 3] };
        let _ = SSL_CONNS.insert(&key, &conn, 0);
        conn
    } else if let Some(conn) = unsafe { SSL_CONNS.get(&key) } {
        *conn
    } else {
        count(Counter::TlsUnattributed);
        return Ok(());
    };
    let direction = if call.direction == Direction::Egress as u8 { Direction::Egress } else { Direction::Ingress };
    let pending = PendingCall {
        fd: conn.fd,
        call: if direction == Direction::Egress { Call::Write } else { Call::Read } as u8,
        source: Source::Tls as u8,
        _pad: [0; 2],
        ptr: call.buf,
        count: bytes,
        enter_ns: call.enter_ns,
        conn_id: conn.conn_id,
    };
    // One plain buffer: the unrolled copy serves, and bpf_loop is not
    // needed on the kernels the syscall path runs on.
    capture::emit::<false>(&pending, tgid, tid, bytes, unsafe { bpf_ktime_get_ns() }, direction);
    threadctx::on_data(&pending, conn.role, pid_tgid, direction == Direction::Egress);
    Ok(())
}

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    let _ = try_enter(&ctx, Direction::Egress as u8, false);
    0
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    let _ = try_enter(&ctx, Direction::Egress as u8, true);
    0
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    let _ = try_enter(&ctx, Direction::Ingress as u8, false);
    0
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    let _ = try_enter(&ctx, Direction::Ingress as u8, true);
    0
}

/// `SSL_do_handshake`, `SSL_accept` and `SSL_connect`.
#[uprobe]
pub fn ssl_handshake(ctx: ProbeContext) -> u32 {
    let _ = try_enter(&ctx, HANDSHAKE, false);
    0
}

/// One return program for them all: the call in flight says which it was.
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    let _ = try_return(&ctx);
    0
}
