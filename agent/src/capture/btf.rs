//! Kernel struct offsets from the running kernel's BTF. Rust eBPF has no
//! CO-RE relocations, so the programs read fields at offsets we compute here
//! and hand over in `Settings`.

use std::path::Path;

use btf_rs::{Btf, BtfType, Type};
use kspan_common::KernelOffsets;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at {path}: {source}. kspan needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (Linux >= 5.8 on most distributions)"
    )]
    Unreadable { path: String, source: btf_rs::Error },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no field {field}")]
    NoField { strukt: String, field: String },
    #[error("kernel BTF: {0}")]
    Parse(#[from] btf_rs::Error),
}

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Resolves the offsets the kernel programs need from a BTF file.
pub fn kernel_offsets(path: &Path) -> Result<KernelOffsets, BtfError> {
    // One read, then parse from memory: btf-rs on the sysfs file issues a
    // seek and a read per type (100k+ syscalls, tens of seconds).
    let unreadable = |source| BtfError::Unreadable { path: path.display().to_string(), source };
    let bytes = std::fs::read(path).map_err(|e| unreadable(btf_rs::Error::IO(e)))?;
    let btf = Btf::from_bytes(&bytes).map_err(unreadable)?;
    let f = |strukt: &str, field: &str| field_offset(&btf, strukt, field);
    Ok(KernelOffsets {
        task_files: f("task_struct", "files")?,
        task_nsproxy: f("task_struct", "nsproxy")?,
        files_fdt: f("files_struct", "fdt")?,
        fdt_max_fds: f("fdtable", "max_fds")?,
        fdt_fd: f("fdtable", "fd")?,
        file_inode: f("file", "f_inode")?,
        file_private_data: f("file", "private_data")?,
        inode_mode: f("inode", "i_mode")?,
        inode_ino: f("inode", "i_ino")?,
        socket_type: f("socket", "type")?,
        socket_sk: f("socket", "sk")?,
        // struct sock starts with its sock_common, so these are offsets in
        // the sock too.
        sk_family: f("sock_common", "skc_family")?,
        sk_type: f("sock", "sk_type")?,
        sk_protocol: f("sock", "sk_protocol")?,
        sk_daddr: f("sock_common", "skc_daddr")?,
        sk_rcv_saddr: f("sock_common", "skc_rcv_saddr")?,
        sk_dport: f("sock_common", "skc_dport")?,
        sk_num: f("sock_common", "skc_num")?,
        sk_v6_daddr: f("sock_common", "skc_v6_daddr")?,
        sk_v6_rcv_saddr: f("sock_common", "skc_v6_rcv_saddr")?,
        nsproxy_net_ns: f("nsproxy", "net_ns")?,
        net_ns_inum: f("net", "ns")? + f("ns_common", "inum")?,
    })
}

/// Byte offset of `field` in `struct strukt`, looking through anonymous
/// unions and structs (sock_common hides most fields in them).
fn field_offset(btf: &Btf, strukt: &str, field: &str) -> Result<u32, BtfError> {
    let not_found = || BtfError::NoField { strukt: strukt.to_owned(), field: field.to_owned() };
    for ty in btf.resolve_types_by_name(strukt).unwrap_or_default() {
        if let Type::Struct(s) = ty {
            return find_member(btf, &s, field)?.map(|bits| bits / 8).ok_or_else(not_found);
        }
    }
    Err(BtfError::NoStruct(strukt.to_owned()))
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, field: &str) -> Result<Option<u32>, BtfError> {
    for member in &s.members {
        let name = btf.resolve_name(member)?;
        if name == field {
            return Ok(Some(member.bit_offset()));
        }
        if name.is_empty() {
            let Some(type_id) = member.get_type_id() else {
                continue;
            };
            if let Type::Struct(inner) | Type::Union(inner) = btf.resolve_type_by_id(type_id)? {
                if let Some(bits) = find_member(btf, &inner, field)? {
                    return Ok(Some(member.bit_offset() + bits));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the real kernel's BTF: the offsets must look like a kernel's,
    /// not zeros (a zero offset only makes sense for the first field).
    #[test]
    fn resolves_offsets_on_this_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("SKIPPED: no {VMLINUX_BTF}");
            return;
        }
        let off = kernel_offsets(path).expect("offsets");
        assert!(off.task_files > 0 && off.task_nsproxy > 0);
        assert!(off.file_inode > 0 && off.file_private_data > 0);
        assert_eq!(off.sk_daddr, 0, "skc_daddr is the first field of sock_common");
        assert_eq!(off.sk_rcv_saddr, 4);
        assert_ne!(off.sk_dport, off.sk_num);
        assert!(off.sk_v6_daddr > off.sk_family);
    }

    #[test]
    fn missing_btf_is_a_clear_error() {
        let err = kernel_offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
