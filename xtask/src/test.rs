//! `cargo xtask test`: everything a fresh machine needs, then every test:
//! unit tests, and the integration tests that load the real programs.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::{setup, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Integration tests that start kspan: run a second time on the syscall
/// capture path, the fallback for kernels without socket tracepoints, so
/// both paths keep every guarantee.
const KSPAN_TESTS: &[&str] = &["capture", "http", "traces", "hosts", "grpc", "databases", "faults", "tls"];

pub fn run(opts: &Options) -> anyhow::Result<()> {
    setup::run(&setup::Options::default())?;
    let mut all = Command::new("cargo");
    all.args(["test", "--no-fail-fast", "--package", "kspan", "--package", "kspan-common", "--package", "xtask"])
        // Library, binaries and every test target; no doc-tests (there are
        // none, and their empty summaries would close the log).
        .args(["--lib", "--bins", "--tests"]);
    if opts.args.is_empty() {
        // Benches run once each in test mode, so they cannot rot and the
        // checks inside them (one span per exchange, say) hold in CI. Not
        // with extra arguments: criterion rejects libtest's options.
        all.arg("--benches");
    }
    all.args(&opts.args);
    let first = run_cargo_test(all)?;
    let mut fallback = Command::new("cargo");
    fallback.args(["test", "--no-fail-fast", "--package", "kspan"]);
    for test in KSPAN_TESTS {
        fallback.args(["--test", test]);
    }
    fallback.args(&opts.args).env("KSPAN_CAPTURE_HOOK", "syscalls");
    println!("== the integration tests again, on the syscall capture path (KSPAN_CAPTURE_HOOK=syscalls) ==");
    let second = run_cargo_test(fallback)?;
    let (passed, failed) = (first.passed + second.passed, first.failed + second.failed);
    // One closing line for the whole run, whatever order cargo used.
    println!("total: {passed} passed, {failed} failed");
    anyhow::ensure!(first.success && second.success, "cargo test failed");
    Ok(())
}

struct Outcome {
    passed: u64,
    failed: u64,
    success: bool,
}

fn run_cargo_test(mut cmd: Command) -> anyhow::Result<Outcome> {
    let mut child = cmd
        .current_dir(workspace_root())
        .env("KSPAN_TEST_VENV", setup::test_venv())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    Ok(Outcome { passed, failed, success: status.success() })
}

/// The number before `label` in "ok. 4 passed; 0 failed; ...".
fn count(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| {
            part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(label.trim())
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_cargo_summaries() {
        let line = "ok. 231 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 2.40s";
        assert_eq!((count(line, " passed"), count(line, " failed")), (231, 0));
        let line = "FAILED. 3 passed; 1 failed; 0 ignored";
        assert_eq!((count(line, " passed"), count(line, " failed")), (3, 1));
    }
}
