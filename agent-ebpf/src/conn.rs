//! The kernel half of the connection table: (tgid, fd) -> connection id,
//! and the open/close records that let user space keep its half in step.

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_smp_processor_id, bpf_ktime_get_ns};
use kspan_common::{Call, ConnEvent, Counter, EventKind, Role};

use crate::{
    maps::{
        CONN_SEQ, CONNS, ConnState, EVENTS, KSPAN_SETTINGS, NOT_SOCKETS, PID_FILTER, PORT_FILTER, SK_CONNS, SK_ROLES,
        SOCKS, SkKey, SockOwner, count, setting,
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
        Ok(Some(sock)) => Some(share(tgid, fd, &sock).unwrap_or_else(|| register(tgid, tid, fd, &sock, Role::Unknown, Call::FirstData))),
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

/// Another fd of a socket this process already has a connection on (dup,
/// dup2: a forking server's child reads on 0 and writes on 1): the same
/// connection, or its requests and responses would be split across two.
#[inline(always)]
fn share(tgid: u32, fd: i32, sock: &SocketInfo) -> Option<u64> {
    let owner = SOCKS.get_ptr_mut(&sock.sk)?;
    // SAFETY: a live value of our own map; a racing update at worst
    // miscounts the fds of one connection.
    let (conn_id, role) = unsafe {
        if ((*owner).fd_key >> 32) as u32 != tgid {
            return None;
        }
        (*owner).more_fds = (*owner).more_fds.saturating_add(1);
        ((*owner).conn_id, (*owner).role)
    };
    let state = ConnState { conn_id, sk: sock.sk, fd, role, _pad: [0; 3] };
    let _ = CONNS.insert(&fd_key(tgid, fd), &state, 0);
    Some(conn_id)
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
    let state = open(tgid, tid, fd, sock, role, call);
    let _ = CONNS.insert(&fd_key(tgid, fd), &state, 0);
    state.conn_id
}

/// A new connection: its id, the sock index entry (so state changes can
/// name it), and the open record for user space. The caller indexes it by
/// whatever its capture path looks connections up by.
#[inline(always)]
pub fn open(tgid: u32, tid: u32, fd: i32, sock: &SocketInfo, role: Role, call: Call) -> ConnState {
    let conn_id = next_conn_id();
    let key = fd_key(tgid, fd);
    let state = ConnState { conn_id, sk: sock.sk, fd, role: role as u8, _pad: [0; 3] };
    let owner = SockOwner { fd_key: key, conn_id, role: role as u8, more_fds: 0, _pad: [0; 6] };
    let _ = SOCKS.insert(&sock.sk, &owner, 0);
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count(Counter::ControlDropped);
        return state;
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
    // Urgent: user space reads the process's identity from procfs, which
    // a short-lived client may not outlive a lazy drain.
    entry.submit(crate::maps::urgent_wakeup_flags());
    state
}

/// The role of the connection on `fd` (syscall path), as `Role` u8.
#[inline(always)]
pub fn role_of(tgid: u32, fd: i32) -> u8 {
    unsafe { CONNS.get(&fd_key(tgid, fd)) }.map_or(Role::Unknown as u8, |s| s.role)
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
    if let Some(owner) = SOCKS.get_ptr_mut(&state.sk) {
        // SAFETY: as in `share`. The sock may already index another
        // process's connection (a forking server's child can read before
        // the parent closes its copy): that one is left alone.
        unsafe {
            if (*owner).conn_id == state.conn_id {
                if (*owner).more_fds > 0 {
                    (*owner).more_fds -= 1;
                    return;
                }
                let _ = SOCKS.remove(&state.sk);
            }
        }
    }
    emit_close(tgid, tid, fd, state.conn_id, state.role, Call::Close);
}

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const TCP_CLOSE_WAIT: i32 = 8;

/// `sock:inet_sock_set_state`. On the socket capture path, a handshake
/// that completes tells which end this sock is. On the syscall path, a
/// known connection that drops straight to CLOSE was aborted (RST, or a
/// refused connect); an orderly close goes through FIN states and its end
/// is seen on close().
#[inline(always)]
pub fn on_state_change(sk: u64, old: i32, new: i32) {
    if setting(&KSPAN_SETTINGS.sock_capture) != 0 {
        // Aborts are seen on tcp_receive_reset there: a drop to CLOSE in
        // the owner's own close() (SO_LINGER 0) is an ordinary close.
        let role = match (old, new) {
            (TCP_SYN_SENT, TCP_ESTABLISHED) => Role::Client,
            (TCP_SYN_RECV, TCP_ESTABLISHED) => Role::Server,
            _ => return,
        };
        let _ = SK_ROLES.insert(&sk, &(role as u8), 0);
        if role == Role::Client {
            crate::sockio::on_client_established(sk);
        }
        return;
    }
    if new == TCP_CLOSE && (old == TCP_ESTABLISHED || old == TCP_SYN_SENT || old == TCP_CLOSE_WAIT) {
        end_sock(sk, Call::Reset);
    }
}

/// `tcp:tcp_receive_reset` (socket capture path): the peer aborted the
/// connection, or refused it.
#[inline(always)]
pub fn on_reset_received(sk: u64) {
    end_sock(sk, Call::Reset);
}

/// `tcp:tcp_destroy_sock` (socket capture path): the sock is freed, so its
/// owner has closed every fd on it and will never read or write it again.
/// Reported here rather than at close(), which that path does not watch.
#[inline(always)]
pub fn on_destroy(sk: u64) {
    let _ = SK_ROLES.remove(&sk);
    end_sock(sk, Call::Close);
}

/// The connection on `sk`, if kspan knows one, has ended (`call` says how):
/// forget it and tell user space.
#[inline(always)]
fn end_sock(sk: u64, call: Call) {
    let Some(owner) = (unsafe { SOCKS.get(&sk) }).copied() else {
        return;
    };
    forget_sock(sk, &owner);
    let tgid = (owner.fd_key >> 32) as u32;
    emit_close(tgid, 0, owner.fd_key as u32 as i32, owner.conn_id, owner.role, call);
}

/// Drops a connection from the sock index and from whichever index its
/// capture path uses, if the entry there still names this connection.
#[inline(always)]
fn forget_sock(sk: u64, owner: &SockOwner) {
    let _ = SOCKS.remove(&sk);
    if setting(&KSPAN_SETTINGS.sock_capture) != 0 {
        let key = SkKey { sk, tgid: (owner.fd_key >> 32) as u32, _pad: 0 };
        if unsafe { SK_CONNS.get(&key) }.is_some_and(|s| s.conn_id == owner.conn_id) {
            let _ = SK_CONNS.remove(&key);
        }
    } else if unsafe { CONNS.get(&owner.fd_key) }.is_some_and(|s| s.conn_id == owner.conn_id) {
        let _ = CONNS.remove(&owner.fd_key);
    }
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
