//! Builds the kernel programs (`agent-ebpf`) with aya-build so the `kspan`
//! binary embeds them: `cargo build --release` gives one self-contained file.

use anyhow::{Context as _, anyhow};

/// The nightly that builds the eBPF crate. Pinned so bpf-linker (built by
/// `cargo xtask setup` against this toolchain's LLVM) always matches it.
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=KSPAN_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("KSPAN_EBPF_TOOLCHAIN").unwrap_or_else(|_| EBPF_TOOLCHAIN.to_owned());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("agent/ has no parent directory"))?
        .join("agent-ebpf");
    let root_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    // aya-build only watches the crate directory; the shared types live in a
    // sub-crate it already covers.
    aya_build::build_ebpf(
        [aya_build::Package { name: "kspan-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .context("building the eBPF programs (run `cargo xtask setup` if bpf-linker or the nightly toolchain is missing)")
}
