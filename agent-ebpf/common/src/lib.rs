//! The contract between kspan's kernel programs and its user-space agent.
//!
//! Every type here is `#[repr(C)]` and plain data: the kernel side writes
//! them into the ring buffer or reads them from globals, user space decodes
//! them with `agent::events`. Keep field order stable and padding explicit so
//! both sides agree without a serializer.
#![no_std]

/// Largest number of payload bytes one event can carry. A power of two so the
/// kernel programs can bound offsets with a mask the verifier understands.
pub const MAX_CAPTURE: usize = 16 * 1024;
/// Payload bytes captured per syscall unless `--capture-size` says otherwise.
pub const DEFAULT_CAPTURE: u32 = 4096;
/// iovecs copied per `readv`/`writev`/`sendmsg`/`recvmsg` on the syscall
/// path (an unrolled loop; the socket path walks up to IOV_MAX with
/// `bpf_loop`); the rest of a larger vector is counted in `size` but
/// flagged as truncated. gRPC's C-core sends one slice per frame part, and
/// a client with 50 calls in flight passed 64 in one sendmsg. The verifier
/// walks every unrolled step: with `--propagate headers`, 320 made the exit
/// program exceed its 1M-instruction limit on 6.18, and the older kernels
/// this path exists for prune less, so the bound keeps a wide margin.
pub const MAX_IOVECS: u32 = 128;
/// iovecs copied per message of `sendmmsg`/`recvmmsg` (datagram-style
/// calls, rare on TCP: kept small so the verifier's work stays bounded).
pub const MAX_MMSG_IOVECS: u32 = 4;
/// Messages captured per `sendmmsg`/`recvmmsg` call.
pub const MAX_MMSG: u32 = 4;

/// What a ring-buffer record is; always its first byte.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Data = 1,
    ConnOpen = 2,
    ConnClose = 3,
    ProcExec = 4,
    ProcExit = 5,
    ProcFork = 6,
    /// sk_msg inserted a `traceparent` (see `InjectEvent`).
    Injected = 7,
    /// A thread began serving an incoming request (see `ThreadCtxEvent`).
    ThreadCtx = 8,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Data,
            2 => Self::ConnOpen,
            3 => Self::ConnClose,
            4 => Self::ProcExec,
            5 => Self::ProcExit,
            6 => Self::ProcFork,
            7 => Self::Injected,
            8 => Self::ThreadCtx,
            _ => return None,
        })
    }
}

/// Which way bytes moved, seen from the traced process.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The process wrote/sent the bytes.
    Egress = 1,
    /// The process read/received the bytes.
    Ingress = 2,
}

/// Who opened the connection, as far as the kernel saw it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The connection predates kspan (or its accept/connect was missed);
    /// user space resolves the role from procfs.
    Unknown = 0,
    Client = 1,
    Server = 2,
}

/// Where payload bytes came from. TLS plaintext from uprobes uses the same
/// `DataEvent` so every protocol parser sees one kind of stream.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Syscall = 1,
    Tls = 2,
}

/// The syscall (or library call) that produced an event.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Read = 1,
    Write = 2,
    Readv = 3,
    Writev = 4,
    Sendto = 5,
    Recvfrom = 6,
    Sendmsg = 7,
    Recvmsg = 8,
    Sendmmsg = 9,
    Recvmmsg = 10,
    Connect = 11,
    Accept = 12,
    Accept4 = 13,
    Close = 14,
    /// Connection first seen on a data syscall: it existed before kspan or
    /// its accept/connect happened outside what we trace.
    FirstData = 15,
    /// The kernel aborted the connection (RST received or sent, or a
    /// refused connect), seen on `sock:inet_sock_set_state`.
    Reset = 16,
    /// Bytes sent from a file or pipe (`sendfile`, `splice`): counted as a
    /// gap, never copied (they are not in user memory).
    Sendfile = 17,
    /// Socket I/O whose user buffer kspan cannot name (`io_uring`, or one
    /// message of a `sendmmsg`/`recvmmsg` batch on the socket capture
    /// path): counted as a gap, never copied.
    Uncaptured = 18,
}

impl Call {
    pub fn from_u8(v: u8) -> Option<Self> {
        use Call::*;
        const ALL: [Call; 18] = [
            Read, Write, Readv, Writev, Sendto, Recvfrom, Sendmsg, Recvmsg, Sendmmsg, Recvmmsg, Connect, Accept,
            Accept4, Close, FirstData, Reset, Sendfile, Uncaptured,
        ];
        let mut i = 0;
        while i < ALL.len() {
            if ALL[i] as u8 == v {
                return Some(ALL[i]);
            }
            i += 1;
        }
        None
    }

    pub fn direction(self) -> Option<Direction> {
        match self {
            Self::Write | Self::Writev | Self::Sendto | Self::Sendmsg | Self::Sendmmsg => Some(Direction::Egress),
            Self::Read | Self::Readv | Self::Recvfrom | Self::Recvmsg | Self::Recvmmsg => Some(Direction::Ingress),
            _ => None,
        }
    }
}

/// `DataEvent::flags`: fewer bytes were captured than the syscall moved.
pub const FLAG_TRUNCATED: u8 = 1;

/// Header of a payload record; `captured` payload bytes follow it directly in
/// the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEvent {
    pub kind: u8,
    /// A `Direction`.
    pub direction: u8,
    /// A `Source`.
    pub source: u8,
    /// A `Call`.
    pub call: u8,
    pub flags: u8,
    pub _pad: [u8; 3],
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    /// Payload bytes that follow this header (<= `MAX_CAPTURE`).
    pub captured: u32,
    pub conn_id: u64,
    /// CLOCK_MONOTONIC at syscall entry and exit.
    pub enter_ns: u64,
    pub exit_ns: u64,
    /// Bytes the syscall actually moved (its return value).
    pub size: u64,
}

pub const DATA_EVENT_SIZE: usize = core::mem::size_of::<DataEvent>();

/// A connection opened, was first seen, or closed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnEvent {
    /// `EventKind::ConnOpen` or `EventKind::ConnClose`.
    pub kind: u8,
    /// A `Role`.
    pub role: u8,
    /// A `Call`: how the connection was learned or ended.
    pub call: u8,
    /// AF_INET (2) or AF_INET6 (10); 0 when the socket could not be read.
    pub family: u8,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub conn_id: u64,
    pub ts_ns: u64,
    /// Socket inode number: the key procfs uses for the same socket.
    pub inode: u64,
    /// Network namespace inode of the process.
    pub netns: u32,
    /// Host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    /// IPv4 addresses use the first four bytes.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// The task's command name: identity of last resort for a process that
    /// exits before user space reads its /proc entry.
    pub comm: [u8; 16],
}

/// Process lifecycle: exec (identity may change), exit (drop state), fork
/// (`child` was created by `tgid`/`tid`; threads included).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcEvent {
    pub kind: u8,
    pub _pad: [u8; 3],
    pub tgid: u32,
    pub tid: u32,
    /// For fork: the new task's pid (a tid for threads).
    pub child: u32,
    pub ts_ns: u64,
}

/// `--propagate headers`: the ids injected into one outgoing request, so
/// the CLIENT span uses exactly them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InjectEvent {
    pub kind: u8,
    /// AF_INET or AF_INET6.
    pub family: u8,
    /// Host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: u16,
    pub tgid: u32,
    pub tid: u32,
    pub _pad2: u32,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// The trace id the kernel chose for the request a thread began serving;
/// injected requests the thread makes carry it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ThreadCtxEvent {
    pub kind: u8,
    /// Non-zero: a later read of the same request head brought its
    /// `traceparent`; this trace id replaces the one sent before.
    pub update: u8,
    pub _pad: [u8; 2],
    pub tgid: u32,
    pub tid: u32,
    pub _pad2: u32,
    pub conn_id: u64,
    pub trace_id: [u8; 16],
}

/// Offsets of kernel struct fields, read by user space from BTF because
/// Rust eBPF has no CO-RE relocations. All in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub task_nsproxy: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub file_private_data: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    pub sk_family: u32,
    pub sk_type: u32,
    pub sk_protocol: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_dport: u32,
    pub sk_num: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub nsproxy_net_ns: u32,
    pub net_ns_inum: u32,
}

/// Where a syscall tracepoint keeps its arguments and return value, read
/// from the tracepoints' `format` files at start-up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallLayout {
    /// Offset of the first argument in `sys_enter_*`; later ones follow at
    /// 8-byte steps.
    pub args_offset: u32,
    /// Offset of `ret` in `sys_exit_*`.
    pub ret_offset: u32,
}

/// Field offsets of the `sock:inet_sock_set_state` record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockStateLayout {
    pub skaddr: u32,
    pub oldstate: u32,
    pub newstate: u32,
    pub _pad: u32,
}

/// `Settings::filter_mode`: which processes the kernel programs look at.
pub const FILTER_ALL: u32 = 0;
/// Only processes in the `PID_FILTER` map (filled from --pid, --exe-path and
/// --open-ports, and inherited by children).
pub const FILTER_ALLOW_LIST: u32 = 1;

/// Run-time settings of the kernel programs, a read-only global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    pub capture_size: u32,
    pub filter_mode: u32,
    /// kspan's own pid: never traced, or its OTLP export would trace itself.
    pub self_tgid: u32,
    /// Non-zero: only processes in this network namespace (inode number).
    pub netns: u32,
    /// Non-zero: connect/accept on a port in `PORT_FILTER` adds the process
    /// to `PID_FILTER`.
    pub port_filter: u32,
    /// Offset of `child_pid` in the `sched_process_fork` tracepoint record.
    pub fork_child_offset: u32,
    /// Non-zero: `--propagate headers` is on (thread contexts are kept).
    pub propagate: u32,
    /// Non-zero: data is captured on `sock_send_length`/`sock_recv_length`
    /// (the socket capture path), not on syscall tracepoints.
    pub sock_capture: u32,
    /// Bytes waiting in the ring at which the kernel wakes user space.
    pub wakeup_bytes: u32,
    pub _pad: u32,
    /// Non-zero: inject only on sockets of the network namespace with this
    /// cookie (`--netns`).
    pub propagate_netns_cookie: u64,
    pub offsets: KernelOffsets,
    pub layout: SyscallLayout,
    pub sock_state: SockStateLayout,
}

/// Slots of the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug)]
pub enum Counter {
    /// Data events lost because the ring buffer was full.
    RingbufDropped = 0,
    /// Connection/process events lost because the ring buffer was full.
    ControlDropped = 1,
    /// Socket syscalls observed (after filtering).
    SocketCalls = 2,
    /// Reads of kernel or user memory that failed.
    ReadErrors = 3,
    /// `traceparent` headers inserted.
    Injected = 4,
    /// Requests left alone because injection could not be proven safe.
    InjectSkipped = 5,
    /// TCP traffic of a traced process on a connection kspan could not tie
    /// to a file descriptor (io_uring, or a socket used by the kernel on
    /// the process's behalf): not captured.
    Unattributed = 6,
    /// HTTP/1 message bodies left out of a record: the head was captured,
    /// and the body only counted (its framing is the `Content-Length`).
    BodiesSkipped = 7,
    /// TLS library calls whose connection could not be named (the call
    /// did no socket I/O and its `SSL` object was never seen doing any):
    /// their plaintext is not captured.
    TlsUnattributed = 8,
}

pub const COUNTER_SLOTS: u32 = 9;

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::KernelOffsets {}
}
