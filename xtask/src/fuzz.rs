//! `cargo xtask fuzz`: run every cargo-fuzz target for a bounded time. A
//! crash is copied to tests/fuzz_regressions/<target>/, where the normal
//! test suite replays it forever after, and the command fails.

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::{run_cmd, setup::EBPF_TOOLCHAIN, workspace_root};

const TARGETS: &[&str] = &["http1", "http2", "decode", "postgres", "redis", "mysql"];

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
