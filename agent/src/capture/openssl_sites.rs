//! Where on OpenSSL's functions the uprobes go.
//!
//! A uprobe replaces one instruction with a breakpoint. The kernel emulates
//! a few instructions (`push` of a register, direct `call`/`jmp`, `jcc`,
//! `nop`) and single-steps every other one out of line, which takes a
//! second trap; on this VM that trap costs ~10 µs against ~0.5 µs for an
//! emulated one. Debian's `SSL_read` and `SSL_write` begin with
//! `sub rsp, N`, so each call into them cost nginx ~10 µs, and wrk as much
//! again (a uprobe fires in every process mapping the file). Both are thin
//! wrappers around `ssl_read_internal`/`ssl_write_internal`, which the
//! `_ex` forms call with their own four arguments (SSL, buffer, length,
//! where the count goes) and which begin with `push`: probed there, entry
//! and return cost ~1 µs, and one probe serves all four public functions
//! (and BIO reads on an SSL BIO, which call them too).
//!
//! The internal function has no symbol; it is the target of the `_ex`
//! form's first call, accepted only when that form does nothing to its
//! arguments before the call and the plain form calls the same target.
//! OpenSSL 3.2+ gave `ssl_write_internal` a fifth argument: its
//! `SSL_write_ex` moves the count pointer before calling, so the writes
//! stay on the public functions there. A leading `endbr64` (CET builds) is
//! not emulated either, and touches neither registers nor the stack: the
//! probe goes on the instruction after it when that one is emulated, where
//! a return probe still finds the return address on top of the stack.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// Bytes of a function decoded at most: the wrappers are a few dozen.
pub(super) const CODE_WINDOW: usize = 256;
/// Instructions allowed before a wrapper's call to the function it wraps.
const MAX_PRELUDE: usize = 6;

/// A hooked function's code, as read from the file.
pub(super) struct Code<'a> {
    /// Virtual address of the first byte.
    pub address: u64,
    /// File offset of the first byte (where uprobes are placed).
    pub offset: u64,
    pub bytes: &'a [u8],
}

/// Whether the kernel emulates the instruction starting `bytes` rather than
/// single-stepping it (arch/x86/kernel/uprobes.c: branches, `push reg`,
/// `nop`). Judged on the encoding the kernel itself looks at.
fn emulated(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        [0x50..=0x57, ..]
            | [0x41, 0x50..=0x57, ..]
            | [0xe8 | 0xe9 | 0xeb | 0x70..=0x7f | 0x90, ..]
            | [0x0f, 0x80..=0x8f | 0x1f, ..]
    )
}

const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// Offset from the function's start of the cheapest place for its entry
/// (and return) probe: past a leading `endbr64` when what follows is
/// emulated, else the first instruction.
pub(super) fn entry_skip(code: &[u8]) -> u64 {
    match code.strip_prefix(&ENDBR64) {
        Some(rest) if emulated(rest) => ENDBR64.len() as u64,
        _ => 0,
    }
}

/// Whether the entry probe (after `entry_skip`) is emulated already.
pub(super) fn cheap_entry(code: &[u8]) -> bool {
    code.get(entry_skip(code) as usize..).is_some_and(emulated)
}

fn decode(code: &Code) -> impl Iterator<Item = Instruction> {
    Decoder::with_ip(64, code.bytes, code.address, DecoderOptions::NONE).into_iter().take_while(|i| !i.is_invalid())
}

fn direct_target(i: &Instruction) -> Option<u64> {
    let branch = matches!(i.mnemonic(), Mnemonic::Call | Mnemonic::Jmp);
    (branch && i.op0_kind() == OpKind::NearBranch64).then(|| i.near_branch_target())
}

/// Touches none of the argument registers (rdi, rsi, rdx, rcx).
fn keeps_arguments(i: &Instruction) -> bool {
    match i.mnemonic() {
        Mnemonic::Endbr64 => true,
        Mnemonic::Push => i.op0_kind() == OpKind::Register,
        Mnemonic::Sub => i.op0_register() == Register::RSP && i.op1_kind() != OpKind::Register,
        Mnemonic::Mov => i.op0_register() == Register::RBP && i.op1_register() == Register::RSP,
        _ => false,
    }
}

/// The function a wrapper hands its arguments to unchanged: the target of
/// its first call (or tail jump), if only argument-preserving set-up comes
/// before it.
fn forwarded_to(wrapper: &Code) -> Option<u64> {
    for i in decode(wrapper).take(MAX_PRELUDE + 1) {
        if let Some(target) = direct_target(&i) {
            return Some(target);
        }
        if !keeps_arguments(&i) {
            return None;
        }
    }
    None
}

fn calls(code: &Code, target: u64) -> bool {
    decode(code).any(|i| i.mnemonic() == Mnemonic::Call && direct_target(&i) == Some(target))
}

/// The internal function behind a `plain`/`ex` pair, when probing it is
/// both cheaper and equivalent: the plain form's entry is single-stepped,
/// the `_ex` form forwards its arguments to it unchanged, and the plain
/// form calls it too. Its address; whether its own entry is cheap is for
/// the caller to check, from the bytes at its `file_offset`.
pub(super) fn internal_target(plain: &Code, ex: &Code) -> Option<u64> {
    if cheap_entry(plain.bytes) {
        return None;
    }
    let target = forwarded_to(ex)?;
    (target != plain.address && target != ex.address && calls(plain, target)).then_some(target)
}

/// File offset of `address`, given a function in the same section.
pub(super) fn file_offset(near: &Code, address: u64) -> Option<u64> {
    near.offset.checked_add_signed(address.wrapping_sub(near.address) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12's libssl.so.3 (OpenSSL 3.0): `SSL_read` at 0x35430,
    /// `SSL_read_ex` at 0x354c0, both calling `ssl_read_internal` (0x35290).
    const SSL_READ: &[u8] = &[
        0x48, 0x83, 0xec, 0x18, // sub rsp, 0x18
        0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0, // mov rax, fs:0x28
        0x48, 0x89, 0x44, 0x24, 0x08, // mov [rsp+8], rax
        0x31, 0xc0, // xor eax, eax
        0x85, 0xd2, // test edx, edx
        0x78, 0x2f, // js +0x2f
        0x48, 0x89, 0xe1, // mov rcx, rsp
        0x48, 0x63, 0xd2, // movsxd rdx, edx
        0xe8, 0x3d, 0xfe, 0xff, 0xff, // call 0x35290
        0x85, 0xc0, // test eax, eax
    ];
    const SSL_READ_EX: &[u8] = &[
        0x48, 0x83, 0xec, 0x08, // sub rsp, 8
        0xe8, 0xc7, 0xfd, 0xff, 0xff, // call 0x35290
        0x31, 0xd2, // xor edx, edx
    ];

    fn code(address: u64, bytes: &[u8]) -> Code<'_> {
        Code { address, offset: address, bytes }
    }

    #[test]
    fn debian_ssl_read_is_probed_inside_its_wrappers() {
        let (plain, ex) = (code(0x35430, SSL_READ), code(0x354c0, SSL_READ_EX));
        assert!(!cheap_entry(plain.bytes), "sub rsp is single-stepped");
        assert_eq!(internal_target(&plain, &ex), Some(0x35290));
        assert_eq!(file_offset(&plain, 0x35290), Some(0x35290));
        let moved = Code { address: 0x35430, offset: 0x1430, bytes: SSL_READ };
        assert_eq!(file_offset(&moved, 0x35290), Some(0x1290));
    }

    #[test]
    fn wrappers_that_change_arguments_or_disagree_are_left_alone() {
        let plain = code(0x35430, SSL_READ);
        // OpenSSL 3.2's SSL_write_ex: mov r8, rcx; xor ecx, ecx; jmp target
        let moves_count = [0x49, 0x89, 0xc8, 0x31, 0xc9, 0xe9, 0x56, 0xfd, 0xff, 0xff];
        assert_eq!(internal_target(&plain, &code(0x354c0, &moves_count)), None);
        // The _ex form calls something the plain form never does.
        let elsewhere = [0x48, 0x83, 0xec, 0x08, 0xe8, 0x00, 0x10, 0x00, 0x00];
        assert_eq!(internal_target(&plain, &code(0x354c0, &elsewhere)), None);
        // A plain form that starts with push is cheap as it is (Node.js).
        let pushes = [0x55, 0x48, 0x89, 0xe5, 0xe8, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(internal_target(&code(0x1000, &pushes), &code(0x354c0, SSL_READ_EX)), None);
        assert_eq!(internal_target(&code(0x1000, &[]), &code(0x2000, &[])), None);
    }

    #[test]
    fn entry_probes_skip_endbr64_only_onto_emulated_instructions() {
        assert_eq!(entry_skip(&[0xf3, 0x0f, 0x1e, 0xfa, 0x41, 0x55]), 4, "endbr64; push r13");
        assert_eq!(entry_skip(&[0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x18]), 0, "endbr64; sub rsp");
        assert_eq!(entry_skip(&[0x55]), 0);
        assert!(cheap_entry(&[0xf3, 0x0f, 0x1e, 0xfa, 0x53]));
        assert!(
            cheap_entry(&[0x41, 0x57]) && cheap_entry(&[0xe9, 0, 0, 0, 0]) && cheap_entry(&[0x0f, 0x84, 0, 0, 0, 0])
        );
        assert!(!cheap_entry(&[0x48, 0x89, 0xe5]) && !cheap_entry(&[0xc3]) && !cheap_entry(&[]));
    }
}
