//! Finds functions of a Go executable by name, with the file offsets of
//! their entry and of every RET instruction: where `gotls` puts its
//! uprobes, since Go code cannot take uretprobes.
//!
//! Names come from the pclntab, the table the Go runtime itself walks for
//! stack traces. Unlike the ELF symbol table it survives `-ldflags="-s -w"`
//! and `strip`, which is how most production Go images are built. Its
//! layout is the one of Go 1.18 and later (magic 0xfffffff0, 0xfffffff1
//! since 1.20); older binaries are reported as unsupported.
//!
//! The file is read, not mapped (see `openssl::exported_functions`).

use std::{fs::File, os::unix::fs::FileExt, path::Path};

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Architecture, Object, ObjectSection, read::ReadCache};

/// Longest function body read; Go's `(*Conn).Read`/`Write` are ~1 KiB.
const MAX_FUNCTION_BYTES: u64 = 1 << 20;
const PCLNTAB_MAGICS: [u32; 2] = [0xffff_fff0, 0xffff_fff1];

#[derive(Debug, thiserror::Error)]
pub enum GoBinaryError {
    #[error("not a Go executable")]
    NotGo,
    #[error("unsupported Go executable: {0}")]
    Unsupported(&'static str),
    #[error("malformed pclntab: {0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One function found by [`find_functions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunction {
    pub name: &'static str,
    /// File offset of the first instruction.
    pub entry: u64,
    /// File offset of the stack check's `jbe` when the prologue is Go's
    /// usual one, else of the first instruction. See [`after_stack_check`].
    pub entry_probe: u64,
    /// File offsets of its RET instructions.
    pub returns: Vec<u64>,
    /// Its direct calls: (file offset of the CALL, address called).
    pub calls: Vec<(u64, u64)>,
    /// Its address (as linked).
    pub address: u64,
}

/// The functions of `names` the x86_64 Go executable at `path` defines, in
/// the order of `names` (those it lacks are left out).
pub fn find_functions(path: &Path, names: &[&'static str]) -> Result<Vec<GoFunction>, GoBinaryError> {
    let file = File::open(path)?;
    let cache = ReadCache::new(&file);
    let elf = object::File::parse(&cache).map_err(|_| GoBinaryError::NotGo)?;
    // A position-independent build keeps it among the relocated data.
    let Some(pclntab) = elf.section_by_name(".gopclntab").or_else(|| elf.section_by_name(".data.rel.ro.gopclntab"))
    else {
        return Err(GoBinaryError::NotGo);
    };
    if elf.architecture() != Architecture::X86_64 {
        return Err(GoBinaryError::Unsupported("only x86_64 is supported"));
    }
    let table = pclntab.data().map_err(|_| GoBinaryError::Malformed("unreadable section"))?;
    let text = elf.section_by_name(".text").ok_or(GoBinaryError::Malformed("no .text section"))?;
    let (text_offset, _) = text.file_range().ok_or(GoBinaryError::Malformed(".text has no file range"))?;
    let mut found = Vec::new();
    for (name, start, end) in function_ranges(table, text.address(), names)? {
        let (Some(offset), Some(len)) = (start.checked_sub(text.address()), end.checked_sub(start)) else {
            return Err(GoBinaryError::Malformed("function outside .text"));
        };
        let entry = text_offset + offset;
        let mut code = vec![0; len.min(MAX_FUNCTION_BYTES) as usize];
        file.read_exact_at(&mut code, entry)?;
        let entry_probe = entry + after_stack_check(&code, start);
        let (returns, calls) = returns_and_calls(&code, start, entry);
        found.push(GoFunction { name, entry, entry_probe, returns, calls, address: start });
    }
    found.sort_by_key(|f| names.iter().position(|n| *n == f.name));
    Ok(found)
}

/// The fuzz target's way in (`protocol::fuzzing::go_pclntab`): `data` as
/// both a pclntab and a function's code.
#[doc(hidden)]
pub fn parse_untrusted(data: &[u8]) {
    let _ = function_ranges(data, 0x40_1000, &["crypto/tls.(*Conn).Read", "main.main"]);
    let _ = returns_and_calls(data, 0x40_1000, 0x1000);
}

/// (name, start, end) addresses of each function of `names` in `table`.
fn function_ranges(
    table: &[u8],
    text_address: u64,
    names: &[&'static str],
) -> Result<Vec<(&'static str, u64, u64)>, GoBinaryError> {
    let u32_at = |at: u64| -> Result<u32, GoBinaryError> {
        let at = usize::try_from(at).map_err(|_| GoBinaryError::Malformed("offset"))?;
        let bytes = table.get(at..at.saturating_add(4)).ok_or(GoBinaryError::Malformed("offset past the table"))?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let word = |index: u64| -> Result<u64, GoBinaryError> {
        let at = 8 + 8 * index as usize;
        let bytes = table.get(at..at + 8).ok_or(GoBinaryError::Malformed("short header"))?;
        Ok(u64::from_le_bytes(bytes.try_into().unwrap_or_default()))
    };
    if !PCLNTAB_MAGICS.contains(&u32_at(0)?) {
        return Err(GoBinaryError::Unsupported("built before Go 1.18"));
    }
    if table.get(7) != Some(&8) {
        return Err(GoBinaryError::Unsupported("not a 64-bit pclntab"));
    }
    let (functions, text_start, names_at, functab) = (word(0)?, word(2)?, word(3)?, word(7)?);
    // A position-independent executable has the text start relocated at
    // load time, and 0 in the file: the runtime's text is `.text`'s start.
    let text_start = if text_start == 0 { text_address } else { text_start };
    let mut found = Vec::new();
    for index in 0..functions {
        // functab: (entry offset, offset of the `_func`) pairs, one past
        // the last function giving its end.
        // Saturating: a corrupt header must end in an error, not overflow.
        let at = functab.saturating_add(index.saturating_mul(8));
        let func = functab.saturating_add(u64::from(u32_at(at.saturating_add(4))?));
        let name_at = names_at.saturating_add(u64::from(u32_at(func.saturating_add(4))?));
        let name = table.get(name_at as usize..).and_then(|rest| rest.split(|&b| b == 0).next()).unwrap_or_default();
        let Some(&wanted) = names.iter().find(|n| n.as_bytes() == name) else {
            continue;
        };
        let (start, end) = (u64::from(u32_at(at)?), u64::from(u32_at(at.saturating_add(8))?));
        found.push((wanted, text_start.saturating_add(start), text_start.saturating_add(end)));
        if found.len() == names.len() {
            break;
        }
    }
    Ok(found)
}

/// Where in a function starting at `address` with `code` to probe its
/// entry, as an offset from its start. A uprobe costs most when the kernel
/// has to single-step the instruction it replaced, and it does for most
/// (`cmp`, `lea`, `sub`); branches, like RET, it emulates. Go's prologue
/// compares the stack pointer (directly, or through R12 for a large frame)
/// with the goroutine's bound and branches to grow the stack: up to that
/// `jbe` no register holding an argument, nor R14, has changed, and
/// nothing jumps to it (the stack growth path restarts the function from
/// its first instruction). Measured on this VM, 200k TLS writes and reads
/// of one byte over a pipe cost 2.3 µs a pair untraced, 65 µs with the
/// entries probed on their first instruction, 30 µs on the `jbe`, and
/// 5.5 µs once `Read`'s RETs (single-stepped: RET is not emulated) gave way
/// to its call to memmove (see `gotls`).
fn after_stack_check(code: &[u8], address: u64) -> u64 {
    use iced_x86::Register;
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let first = decoder.decode();
    let (check, branch) = if first.mnemonic() == Mnemonic::Lea && first.op0_register() == Register::R12 {
        (decoder.decode(), decoder.decode())
    } else {
        (first, decoder.decode())
    };
    let bound_check = check.mnemonic() == Mnemonic::Cmp
        && matches!(check.op0_register(), Register::RSP | Register::R12)
        && check.memory_base() == Register::R14;
    if bound_check && branch.mnemonic() == Mnemonic::Jbe { branch.ip() - address } else { 0 }
}

/// File offsets of the RET instructions in `code`, which starts at
/// `address` and file offset `entry`, and its direct calls (file offset,
/// target). Decoded, not scanned for 0xc3: that byte also occurs inside
/// other instructions, and a uprobe placed there would corrupt the code.
fn returns_and_calls(code: &[u8], address: u64, entry: u64) -> (Vec<u64>, Vec<(u64, u64)>) {
    let (mut returns, mut calls) = (Vec::new(), Vec::new());
    for instruction in Decoder::with_ip(64, code, address, DecoderOptions::NONE) {
        let offset = entry + (instruction.ip() - address);
        match instruction.mnemonic() {
            Mnemonic::Ret => returns.push(offset),
            Mnemonic::Call if instruction.op0_kind() == iced_x86::OpKind::NearBranch64 => {
                calls.push((offset, instruction.near_branch_target()));
            }
            _ => {}
        }
    }
    (returns, calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_probe_goes_on_the_stack_checks_branch() {
        // cmp rsp, [r14+0x10]; jbe +0x40; push rbp
        let small = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x40, 0x55];
        assert_eq!(after_stack_check(&small, 0x401000), 4);
        // lea r12, [rsp-0x1a0]; cmp r12, [r14+0x10]; jbe ...
        let large = [0x4c, 0x8d, 0xa4, 0x24, 0x60, 0xfe, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0, 1, 0, 0];
        assert_eq!(after_stack_check(&large, 0x401000), 12);
        // Anything else keeps the first instruction: mov rax, rbx; jbe
        assert_eq!(after_stack_check(&[0x48, 0x89, 0xd8, 0x76, 0x40], 0x401000), 0);
        assert_eq!(after_stack_check(&[], 0x401000), 0);
    }

    #[test]
    fn rets_are_found_by_decoding_not_by_byte() {
        // mov ebx, eax (89 c3: a c3 inside an instruction); ret; int3; ret;
        // call +0x10 (e8 10 00 00 00), from 0x401005 to 0x40101a
        let code = [0x89, 0xc3, 0xc3, 0xcc, 0xc3, 0xe8, 0x10, 0, 0, 0];
        let (returns, calls) = returns_and_calls(&code, 0x401000, 0x1000);
        assert_eq!(returns, vec![0x1002, 0x1004]);
        assert_eq!(calls, vec![(0x1005, 0x40101a)]);
    }

    /// Debian's Go toolchain is itself a stripped Go program that links
    /// crypto/tls (`cargo xtask test` installs it for the Go peers).
    #[test]
    fn finds_crypto_tls_in_a_stripped_go_executable() {
        let Ok(go) = std::fs::canonicalize("/usr/bin/go") else {
            assert!(std::env::var_os("CI").is_none(), "CI: /usr/bin/go is missing");
            eprintln!("skipped: no /usr/bin/go");
            return;
        };
        let names = ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write", "runtime.memmove"];
        let found = find_functions(&go, &names).expect("a Go executable");
        assert_eq!(found.iter().map(|f| f.name).collect::<Vec<_>>(), names);
        // Read copies the plaintext out with one call to memmove (see gotls).
        let memmove = found[2].address;
        assert_eq!(found[0].calls.iter().filter(|(_, to)| *to == memmove).count(), 1, "{:x?}", found[0].calls);
        let found = &found[..2];
        let file = File::open(&go).expect("readable");
        for function in found {
            let mut prologue = [0; 8];
            file.read_exact_at(&mut prologue, function.entry).expect("entry inside the file");
            // Every Go function with a frame starts by checking its stack
            // against the goroutine's bound, `[r14+0x10]`: directly
            // (`cmp rsp, [r14+0x10]`) or, for a large frame, through
            // `lea r12, [rsp-N]`.
            let checks_stack = prologue.starts_with(&[0x49, 0x3b, 0x66, 0x10]) || prologue.starts_with(&[0x4c, 0x8d, 0x64])
                || prologue.starts_with(&[0x4c, 0x8d, 0xa4]);
            assert!(checks_stack, "{}: not a Go function entry: {prologue:02x?}", function.name);
            let mut branch = [0; 2];
            file.read_exact_at(&mut branch, function.entry_probe).expect("probe inside the file");
            // jbe rel8 (76) or rel32 (0f 86), right after the check.
            assert!(branch[0] == 0x76 || branch == [0x0f, 0x86], "{}: {branch:02x?}", function.name);
            assert!(function.entry_probe - function.entry <= 12, "{}", function.name);
            assert!(!function.returns.is_empty(), "{}: no RET found", function.name);
            for &ret in &function.returns {
                let mut byte = [0];
                file.read_exact_at(&mut byte, ret).expect("RET inside the file");
                assert_eq!(byte, [0xc3], "{} at {ret:#x}", function.name);
            }
        }
    }

    #[test]
    fn a_non_go_executable_is_told_apart() {
        let me = std::env::current_exe().expect("test binary");
        assert!(matches!(find_functions(&me, &["main.main"]), Err(GoBinaryError::NotGo)));
    }

    #[test]
    fn truncated_pclntab_is_an_error_not_a_panic() {
        let mut table = vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        table.extend_from_slice(&[0xff; 8]); // nfunc far beyond the data
        assert!(function_ranges(&table, 0, &["x"]).is_err());
        assert!(function_ranges(&table[..6], 0, &["x"]).is_err());
        let old = [0xfa, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        assert!(matches!(function_ranges(&old, 0, &["x"]), Err(GoBinaryError::Unsupported(_))));
    }
}
