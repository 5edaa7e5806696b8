//! The kernel half of the connection table: (tgid, fd) -> connection id,
//! and the open/close records that let user space keep its half in step.

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_smp_processor_id, bpf_ktime_get_ns};
use kspan_common::{Call, ConnEvent, Counter, EventKind, Role};

use crate::{
    maps::{
        CONN_SEQ, CONNS, ConnState, EVENTS, KSPAN_SETTINGS, NOT_SOCKETS, PID_FILTER, PORT_FILTER, SOCKS, SockOwner, count,
        setting,
    },
    task::{self, SocketInfo},
};

#[inline(always)]
pub fn fd_key(tgid: u32, fd: i32) -> u64 {
    ((tgid as u64) << 32) | (fd as u32 as u64)
}

#[inline(always)]
fn next_conn_id() -> u64 {
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    match CONN_SEQ.get_ptr_mut(0) {
        Some(seq) => unsafe {
            *seq += 1;
            (*seq << 8) | (cpu & 0xff)
        },
        None => 0,
    }
}

/// The connection behind `fd`, learning it (and telling user space) on first
/// sight. `None` for anything that is not a TCP socket.
#[inline(always)]
pub fn lookup_or_learn(tgid: u32, tid: u32, fd: i32) -> Option<u64> {
    let key = fd_key(tgid, fd);
    if let Some(state) = unsafe { CONNS.get(&key) } {
        return Some(state.conn_id);
    }
    if unsafe { NOT_SOCKETS.get(&key) }.is_some() {
        return None;
    }
    match task::tcp_socket_of_fd(fd) {
        Ok(Some(sock)) => Some(register(tgid, tid, fd, &sock, Role::Unknown, Call::FirstData)),
        Ok(None) => {
            let _ = NOT_SOCKETS.insert(&key, &1, 0);
            None
        }
        Err(_) => {
            count(Counter::ReadErrors);
            None
        }
    }
}

/// After a successful connect/accept: a new connection on `fd`, replacing
/// whatever the fd meant before.
#[inline(always)]
pub fn learn_new(tgid: u32, tid: u32, fd: i32, role: Role, call: Call) {
    let key = fd_key(tgid, fd);
    let _ = NOT_SOCKETS.remove(&key);
    if let Ok(Some(sock)) = task::tcp_socket_of_fd(fd) {
        register(tgid, tid, fd, &sock, role, call);
    }
}

#[inline(always)]
fn register(tgid: u32, tid: u32, fd: i32, sock: &SocketInfo, role: Role, call: Call) -> u64 {
    let conn_id = next_conn_id();
    let key = fd_key(tgid, fd);
    let state = ConnState { conn_id, sk: sock.sk, role: role as u8, _pad: [0; 7] };
    let _ = CONNS.insert(&key, &state, 0);
    let owner = SockOwner { fd_key: key, conn_id, role: role as u8, _pad: [0; 7] };
    let _ = SOCKS.insert(&sock.sk, &owner, 0);
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count(Counter::ControlDropped);
        return conn_id;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at reserved ring-buffer memory of the right size;
    // every field is written before submit.
    unsafe {
        (*ev).kind = EventKind::ConnOpen as u8;
        (*ev).role = role as u8;
        (*ev).call = call as u8;
        (*ev).family = sock.family as u8;
        (*ev).tgid = tgid;
        (*ev).tid = tid;
        (*ev).fd = fd;
        (*ev).conn_id = conn_id;
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).inode = sock.inode;
        (*ev).netns = task::current_netns().unwrap_or(0);
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        match task::endpoints(sock.sk, sock.family) {
            Ok(ep) => {
                (*ev).local_port = ep.local_port;
                (*ev).remote_port = ep.remote_port;
                (*ev).local_addr = ep.local_addr;
                (*ev).remote_addr = ep.remote_addr;
            }
            Err(_) => {
                (*ev).family = 0;
                (*ev).local_port = 0;
                (*ev).remote_port = 0;
                (*ev).local_addr = [0; 16];
                (*ev).remote_addr = [0; 16];
            }
        }
    }
    entry.submit(crate::maps::submit_wakeup_flags::<ConnEvent>());
    conn_id
}

/// `close(fd)` or an fd replaced by dup2/dup3.
#[inline(always)]
pub fn forget(tgid: u32, tid: u32, fd: i32) {
    let key = fd_key(tgid, fd);
    // Most closes are of files no data syscall ever looked at: a lookup
    // costs far less than an LRU delete, which takes the map's list lock.
    if unsafe { NOT_SOCKETS.get(&key) }.is_some() {
        let _ = NOT_SOCKETS.remove(&key);
        return;
    }
    let Some(state) = (unsafe { CONNS.get(&key) }).copied() else {
        return;
    };
    let _ = CONNS.remove(&key);
    let _ = SOCKS.remove(&state.sk);
    emit_close(tgid, tid, fd, state.conn_id, state.role, Call::Close);
}

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const TCP_CLOSE_WAIT: i32 = 8;

/// `sock:inet_sock_set_state`: a known connection that drops straight to
/// CLOSE was aborted (RST, or a refused connect). An orderly close goes
/// through FIN states, and a close() by the owner was already seen.
#[inline(always)]
pub fn on_state_change(sk: u64, old: i32, new: i32) {
    if new != TCP_CLOSE || !(old == TCP_ESTABLISHED || old == TCP_SYN_SENT || old == TCP_CLOSE_WAIT) {
        return;
    }
    let Some(owner) = (unsafe { SOCKS.get(&sk) }).copied() else {
        return;
    };
    let _ = SOCKS.remove(&sk);
    // Only if the fd still names this connection (it may be reused).
    if unsafe { CONNS.get(&owner.fd_key) }.is_some_and(|s| s.conn_id == owner.conn_id) {
        let _ = CONNS.remove(&owner.fd_key);
    }
    let tgid = (owner.fd_key >> 32) as u32;
    emit_close(tgid, 0, owner.fd_key as u32 as i32, owner.conn_id, owner.role, Call::Reset);
}

#[inline(always)]
fn emit_close(tgid: u32, tid: u32, fd: i32, conn_id: u64, role: u8, call: Call) {
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count(Counter::ControlDropped);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: as in `register`.
    unsafe {
        core::ptr::write_bytes(ev, 0, 1);
        (*ev).kind = EventKind::ConnClose as u8;
        (*ev).role = role;
        (*ev).call = call as u8;
        (*ev).tgid = tgid;
        (*ev).tid = tid;
        (*ev).fd = fd;
        (*ev).conn_id = conn_id;
        (*ev).ts_ns = bpf_ktime_get_ns();
    }
    entry.submit(crate::maps::submit_wakeup_flags::<ConnEvent>());
}

/// `--open-ports`: a process that connects to or accepts on a watched port
/// joins the allow-list. Ports are read from the socket, so this also works
/// for accept() without a peer address argument.
#[inline(always)]
pub fn enroll_by_port(tgid: u32, fd: i32, role: Role) {
    if setting(&KSPAN_SETTINGS.port_filter) == 0 {
        return;
    }
    let Ok(Some(sock)) = task::tcp_socket_of_fd(fd) else {
        return;
    };
    let Ok(ep) = task::endpoints(sock.sk, sock.family) else {
        return;
    };
    let port = if role == Role::Server { ep.local_port } else { ep.remote_port };
    if unsafe { PORT_FILTER.get(&port) }.is_some() {
        let _ = PID_FILTER.insert(&tgid, &1, 0);
    }
}
