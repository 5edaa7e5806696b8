//! Reads kernel structures of the current task: fd -> file -> socket -> sock,
//! and the network namespace. Offsets come from user space (BTF) because Rust
//! eBPF has no CO-RE.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel, generated};
use kspan_common::KernelOffsets;

use crate::maps::{KSPAN_SETTINGS, setting};

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const SOCK_STREAM: u16 = 1;
const IPPROTO_TCP: u16 = 6;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

#[inline(always)]
fn offsets() -> &'static KernelOffsets {
    &KSPAN_SETTINGS.offsets
}

#[inline(always)]
unsafe fn read<T>(base: u64, offset: &u32) -> Result<T, i32> {
    let at = base + setting(offset) as u64;
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address.
    unsafe { bpf_probe_read_kernel(at as *const T) }
}

/// A TCP socket behind an fd, with what identifies it.
pub struct SocketInfo {
    pub sk: u64,
    pub inode: u64,
    pub family: u16,
}

/// The file behind `fd` in the current task, if the fd table has one.
#[inline(always)]
fn file_of_fd(fd: i32) -> Result<u64, i32> {
    if fd < 0 {
        return Err(-1);
    }
    let off = offsets();
    let task = unsafe { bpf_get_current_task() };
    unsafe {
        let files: u64 = read(task, &off.task_files)?;
        let fdt: u64 = read(files, &off.files_fdt)?;
        let max_fds: u32 = read(fdt, &off.fdt_max_fds)?;
        if fd as u32 >= max_fds {
            return Err(-1);
        }
        let fd_array: u64 = read(fdt, &off.fdt_fd)?;
        let file: u64 = bpf_probe_read_kernel((fd_array + fd as u64 * 8) as *const u64)?;
        if file == 0 { Err(-1) } else { Ok(file) }
    }
}

/// `Ok(None)`: the fd is something else (file, pipe, tty, UDP, unix socket).
#[inline(always)]
pub fn tcp_socket_of_fd(fd: i32) -> Result<Option<SocketInfo>, i32> {
    let off = offsets();
    let file = file_of_fd(fd)?;
    unsafe {
        let inode: u64 = read(file, &off.file_inode)?;
        let mode: u16 = read(inode, &off.inode_mode)?;
        if mode & S_IFMT != S_IFSOCK {
            return Ok(None);
        }
        let ino: u64 = read(inode, &off.inode_ino)?;
        let socket: u64 = read(file, &off.file_private_data)?;
        let sock_type: u16 = read(socket, &off.socket_type)?;
        if sock_type != SOCK_STREAM {
            return Ok(None);
        }
        let sk: u64 = read(socket, &off.socket_sk)?;
        if sk == 0 {
            return Ok(None);
        }
        let family: u16 = read(sk, &off.sk_family)?;
        if family != AF_INET && family != AF_INET6 {
            return Ok(None);
        }
        Ok(Some(SocketInfo { sk, inode: ino, family }))
    }
}

/// Local and remote endpoint of a sock, ports in host order.
pub struct Endpoints {
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
}

/// Local and remote port of a sock, in host order.
#[inline(always)]
pub fn ports(sk: u64) -> Result<(u16, u16), i32> {
    let off = offsets();
    // SAFETY: faulting-safe reads. skc_num is host order, skc_dport is not.
    unsafe { Ok((read::<u16>(sk, &off.sk_num)?, u16::from_be(read::<u16>(sk, &off.sk_dport)?))) }
}

#[inline(always)]
pub fn endpoints(sk: u64, family: u16) -> Result<Endpoints, i32> {
    let off = offsets();
    let mut ep = Endpoints { local_addr: [0; 16], remote_addr: [0; 16], local_port: 0, remote_port: 0 };
    unsafe {
        // skc_num is the local port in host order; skc_dport is big-endian.
        ep.local_port = read::<u16>(sk, &off.sk_num)?;
        ep.remote_port = u16::from_be(read::<u16>(sk, &off.sk_dport)?);
        if family == AF_INET {
            let local: [u8; 4] = read(sk, &off.sk_rcv_saddr)?;
            let remote: [u8; 4] = read(sk, &off.sk_daddr)?;
            ep.local_addr[..4].copy_from_slice(&local);
            ep.remote_addr[..4].copy_from_slice(&remote);
        } else {
            ep.local_addr = read(sk, &off.sk_v6_rcv_saddr)?;
            ep.remote_addr = read(sk, &off.sk_v6_daddr)?;
        }
    }
    Ok(ep)
}

/// Inode number of the current task's network namespace.
#[inline(always)]
pub fn current_netns() -> Result<u32, i32> {
    let off = offsets();
    let task = unsafe { bpf_get_current_task() };
    unsafe {
        let nsproxy: u64 = read(task, &off.task_nsproxy)?;
        if nsproxy == 0 {
            return Err(-1);
        }
        let net: u64 = read(nsproxy, &off.nsproxy_net_ns)?;
        read(net, &off.net_ns_inum)
    }
}

/// Whether a sock is TCP over IPv4/IPv6, from the sock alone (no fd walk).
#[inline(always)]
pub fn sock_is_tcp(sk: u64) -> Result<bool, i32> {
    let off = offsets();
    unsafe {
        let family: u16 = read(sk, &off.sk_family)?;
        if family != AF_INET && family != AF_INET6 {
            return Ok(false);
        }
        let sk_type: u16 = read(sk, &off.sk_type)?;
        let protocol: u16 = read(sk, &off.sk_protocol)?;
        Ok(sk_type == SOCK_STREAM && protocol == IPPROTO_TCP)
    }
}

/// The registers the current task entered the kernel with, from `r10` to
/// `orig_ax` in x86_64 `struct pt_regs` order: its syscall number and
/// arguments, still there while the syscall runs.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallRegs {
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub ax: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    pub orig_ax: u64,
}

/// Offset of `r10` in x86_64 `struct pt_regs` (r15..r11 come first).
const PT_REGS_R10: u64 = 7 * 8;

#[inline(always)]
pub fn syscall_regs() -> Result<SyscallRegs, i32> {
    // SAFETY: helpers on the current task; the read faults safely.
    unsafe {
        let regs = generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf());
        if regs == 0 {
            return Err(-1);
        }
        bpf_probe_read_kernel((regs as u64 + PT_REGS_R10) as *const SyscallRegs).map_err(|e| e as i32)
    }
}
