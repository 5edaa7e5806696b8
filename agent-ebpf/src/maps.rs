//! Maps and the settings global. Every map is bounded; per-thread and
//! per-connection state lives in LRU maps so a missed exit or close can never
//! fill them.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use kspan_common::{COUNTER_SLOTS, Counter, DataEvent, MAX_CAPTURE, Settings};

/// Written by user space before load (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
pub static KSPAN_SETTINGS: Settings = Settings {
    capture_size: 0,
    filter_mode: 0,
    self_tgid: 0,
    netns: 0,
    port_filter: 0,
    fork_child_offset: 0,
    propagate: 0,
    sock_capture: 0,
    wakeup_bytes: 0,
    _pad: 0,
    propagate_netns_cookie: 0,
    offsets: kspan_common::KernelOffsets {
        task_files: 0,
        task_nsproxy: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        file_inode: 0,
        file_private_data: 0,
        inode_mode: 0,
        inode_ino: 0,
        socket_type: 0,
        socket_sk: 0,
        sk_family: 0,
        sk_type: 0,
        sk_protocol: 0,
        sk_daddr: 0,
        sk_rcv_saddr: 0,
        sk_dport: 0,
        sk_num: 0,
        sk_v6_daddr: 0,
        sk_v6_rcv_saddr: 0,
        nsproxy_net_ns: 0,
        net_ns_inum: 0,
    },
    layout: kspan_common::SyscallLayout { args_offset: 0, ret_offset: 0 },
    sock_state: kspan_common::SockStateLayout { skaddr: 0, oldstate: 0, newstate: 0, _pad: 0 },
};

/// The loader rewrites this .rodata value before load; a volatile read keeps
/// the compiler from folding in the zeros it was declared with.
#[inline(always)]
pub fn setting(field: &u32) -> u32 {
    // SAFETY: `field` points into KSPAN_SETTINGS.
    unsafe { core::ptr::read_volatile(field) }
}

/// All records for user space. Resized by the loader (`--ringbuf-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Arguments of a syscall between its enter and exit tracepoints, by
/// pid_tgid. A plain hash, not LRU: an LRU insert costs several times a
/// preallocated one on every traced syscall, and entries cannot go stale
/// (the exit removes them, and so does the thread's death).
#[map]
pub static PENDING: HashMap<u64, PendingCall> = HashMap::with_max_entries(16384, 0);

/// Sockets we know, by `tgid << 32 | fd`.
#[map]
pub static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(65536, 0);

/// Socket capture path: connections by (sock, process). A sock is the
/// same connection in every process that shares it, but each process
/// reports it under its own fd.
#[map]
pub static SK_CONNS: LruHashMap<SkKey, ConnState> = LruHashMap::with_max_entries(65536, 0);

/// Socket capture path: which end each handshake made a sock
/// (`Role` as u8), from `inet_sock_set_state`, until the sock is freed.
#[map]
pub static SK_ROLES: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// Socket capture path: when the send in progress on this CPU entered TCP
/// (`tcp_sendmsg_locked`), for `sock_send_length` to report as its start.
#[map]
pub static SEND_START: PerCpuArray<SendStart> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SendStart {
    pub sk: u64,
    pub ts_ns: u64,
}

/// Known connections by kernel `struct sock` address, so a state change
/// (which fires outside the owning process) can name the connection.
#[map]
pub static SOCKS: LruHashMap<u64, SockOwner> = LruHashMap::with_max_entries(65536, 0);

/// File descriptors known not to be TCP sockets, so file and pipe I/O pays
/// for the fd-table walk once, not on every call.
#[map]
pub static NOT_SOCKETS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// Processes to trace when `filter_mode == FILTER_ALLOW_LIST`.
#[map]
pub static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Ports from `--open-ports`.
#[map]
pub static PORT_FILTER: HashMap<u16, u8> = HashMap::with_max_entries(65536, 0);

/// Scratch for one data record per CPU: too big for the 512-byte stack, and
/// for a per-CPU map (32 KiB value limit), so a plain array indexed by CPU
/// id, sized to the possible CPUs by the loader. Twice `MAX_CAPTURE` so an
/// offset below `MAX_CAPTURE` plus a copy of at most `MAX_CAPTURE` provably
/// stays inside the buffer.
#[repr(C)]
pub struct DataScratch {
    pub header: DataEvent,
    pub payload: [u8; 2 * MAX_CAPTURE],
    pub cursor: ScanCursor,
}

/// Where `headonly` is in its scan of the payload (see `Scan::cursor`).
#[repr(C)]
pub struct ScanCursor {
    pub next: u32,
    pub last_lf: u32,
    pub content_length: u64,
}

#[map]
pub static SCRATCH: Array<DataScratch> = Array::with_max_entries(1, 0);

/// Per-CPU counters, summed by user space (see `Counter`).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Per-CPU sequence for connection ids: `seq << 8 | cpu` is unique without
/// any cross-CPU atomics.
#[map]
pub static CONN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `--propagate headers`: the incoming request each thread is serving.
#[map]
pub static THREAD_CTX: LruHashMap<u64, ThreadCtx> = LruHashMap::with_max_entries(16384, 0);

/// `--propagate headers`: processes whose threads stand for no request
/// (Go), filled by user space at start-up and at exec. A goroutine runs on
/// any thread, so the request a thread last read is often another
/// goroutine's: what such a process sends is injected with a trace id of
/// its own, never that one.
#[map]
pub static THREADLESS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ThreadCtx {
    pub trace_id: [u8; 16],
    pub conn_id: u64,
    /// Another connection's request arrived before this one was answered
    /// (an event loop): injected requests of this thread start new traces.
    pub ambiguous: u8,
    /// The request's head went on past the read that began it, without a
    /// `traceparent` so far: the next reads of the connection are searched
    /// too.
    pub head_open: u8,
    pub _pad: [u8; 6],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingCall {
    pub fd: i32,
    pub call: u8,
    /// A `Source`: a syscall, or a TLS library call (plaintext).
    pub source: u8,
    pub _pad: [u8; 2],
    /// Buffer, iovec array, msghdr or mmsghdr array, by `call`.
    pub ptr: u64,
    /// Byte count, iovec count or message count, by `call`.
    pub count: u64,
    pub enter_ns: u64,
    pub conn_id: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnState {
    pub conn_id: u64,
    pub sk: u64,
    pub fd: i32,
    pub role: u8,
    pub _pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SkKey {
    pub sk: u64,
    pub tgid: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockOwner {
    /// `tgid << 32 | fd`, the CONNS key.
    pub fd_key: u64,
    pub conn_id: u64,
    pub role: u8,
    /// Other fds of the same process on this socket (syscall path: dup,
    /// dup2): closing one of them does not end the connection.
    pub more_fds: u8,
    pub _pad: [u8; 6],
}

/// Only the record that carries the ring's backlog across
/// `Settings::wakeup_bytes` asks for a wakeup: a wakeup is an irq_work IPI
/// (a VM exit under virtualisation), and asking on every record while the
/// consumer is behind cost more than all of kspan's parsing. User space also
/// drains on a timer, so a crossing missed in a race between CPUs delays
/// records by at most that tick.
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

#[inline(always)]
fn crossing_flags(before: u64, len: u64) -> u64 {
    let mark = u64::from(setting(&KSPAN_SETTINGS.wakeup_bytes));
    if before < mark && before + len >= mark { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP }
}

/// Flags for a record user space must handle promptly (see `conn::open`).
#[inline(always)]
pub fn urgent_wakeup_flags() -> u64 {
    BPF_RB_FORCE_WAKEUP
}

/// Flags for `EVENTS.output` of a `len`-byte record (queried before it is in the ring).
#[inline(always)]
pub fn output_wakeup_flags(len: u64) -> u64 {
    crossing_flags(EVENTS.query(BPF_RB_AVAIL_DATA), len)
}

/// Flags for submitting a reserved record of type `T` (already counted in the ring).
#[inline(always)]
pub fn submit_wakeup_flags<T>() -> u64 {
    let len = core::mem::size_of::<T>() as u64 + 8;
    crossing_flags(EVENTS.query(BPF_RB_AVAIL_DATA).saturating_sub(len), len)
}

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}
