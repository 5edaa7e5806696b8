//! `cargo xtask fuzz`: run every cargo-fuzz target for a bounded time. A
//! crash is copied to tests/fuzz_regressions/<target>/, where the normal
//! test suite replays it forever after, and the command fails.

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::{run_cmd, setup::EBPF_TOOLCHAIN, workspace_root};

const TARGETS: &[&str] = &["http1", "http2", "decode", "postgres", "redis", "mysql", "go_pclntab"];

#[derive(clap::Args)]
pub struct Options {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only this target.
    #[arg(long)]
    pub target: Option<String>,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let mut crashed = Vec::new();
    for target in TARGETS.iter().filter(|t| opts.target.as_deref().is_none_or(|o| o == **t)) {
        let corpus = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        seed_from_recordings(&root, target, &corpus)?;
        let status = Command::new("cargo")
            .current_dir(&root)
            .arg(format!("+{EBPF_TOOLCHAIN}"))
            .args(["fuzz", "run", "--fuzz-dir", "agent/fuzz", target])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={}", opts.seconds))
            .status()
            .with_context(|| format!("running fuzz target {target}"))?;
        if !status.success() {
            // A crash leaves an input behind; anything else is a failed run.
            anyhow::ensure!(save_artifacts(&root, target)? > 0, "fuzz target {target} did not run: {status}");
            crashed.push(*target);
        }
    }
    anyhow::ensure!(crashed.is_empty(), "fuzz targets crashed: {crashed:?} (inputs saved under tests/fuzz_regressions)");
    Ok(())
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let have = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !have {
        run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Longest seed written: libFuzzer's default input limit.
const MAX_SEED: usize = 4096;

/// Starts a database target's corpus from the conversations recorded with
/// real servers (tests/recordings/<target>-*.rec): random bytes take the
/// fuzzer a long time to get past a startup handshake, a recording starts
/// it there. Each piece becomes chunks in the fuzz input format of
/// `kspan::protocol::fuzzing` (a control byte: direction and length).
fn seed_from_recordings(root: &Path, target: &str, corpus: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(root.join("tests/recordings")).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&format!("{target}-")) || !name.ends_with(".rec") {
            continue;
        }
        let recording = std::fs::read(entry.path()).with_context(|| format!("reading {name}"))?;
        std::fs::write(corpus.join(format!("seed-{name}")), fuzz_input(&recording))?;
    }
    Ok(())
}

/// A recording (`dir`, `len u32 LE`, bytes; see protocol/recording.rs) as a
/// fuzz input: a first byte of flags (0: from the connection's start), then
/// chunks of `1 + 7k` bytes, each after a control byte `dir << 7 | k`.
fn fuzz_input(recording: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    let mut rest = recording;
    while let [dir, a, b, c, d, tail @ ..] = rest {
        let len = (u32::from_le_bytes([*a, *b, *c, *d]) as usize).min(tail.len());
        let (mut data, next) = tail.split_at(len);
        rest = next;
        while !data.is_empty() && out.len() < MAX_SEED {
            let k = ((data.len() - 1) / 7).min(63);
            out.push(if *dir == b'C' { 0 } else { 0x80 } | k as u8);
            let (chunk, more) = data.split_at(k * 7 + 1);
            out.extend_from_slice(chunk);
            data = more;
        }
    }
    out.truncate(MAX_SEED);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_become_chunked_fuzz_inputs() {
        // A 9-byte client piece (chunks of 8 + 1) and a 1-byte server piece.
        let rec = [b"C\x09\0\0\0abcdefghi".as_slice(), b"S\x01\0\0\0z"].concat();
        let input = fuzz_input(&rec);
        assert_eq!(input, [b"\0\x01abcdefgh".as_slice(), b"\x00i", b"\x80z"].concat());
    }
}

/// Copies crash inputs into the regression fixtures; returns how many.
fn save_artifacts(root: &Path, target: &str) -> anyhow::Result<usize> {
    let artifacts = root.join("agent/fuzz/artifacts").join(target);
    let dest = root.join("tests/fuzz_regressions").join(target);
    std::fs::create_dir_all(&dest)?;
    let mut saved = 0;
    for entry in std::fs::read_dir(&artifacts).into_iter().flatten().flatten() {
        std::fs::copy(entry.path(), dest.join(entry.file_name()))?;
        eprintln!("xtask: saved {} as a regression fixture", entry.path().display());
        saved += 1;
    }
    Ok(saved)
}
