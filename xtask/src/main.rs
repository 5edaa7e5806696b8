//! Developer tasks: `cargo xtask setup | run | test`.

mod fuzz;
mod run;
mod setup;
mod sink;
mod soak;
mod test;
mod bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "kspan developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make this machine ready: eBPF toolchain, bpf-linker, test peers.
    Setup(setup::Options),
    /// Build kspan (release) and run it as root.
    Run(run::Options),
    /// Set up what is missing, then run every test, eBPF ones included.
    Test(test::Options),
    /// Run every fuzz target for a bounded time; crashes become fixtures.
    Fuzz(fuzz::Options),
    /// Minutes of mixed load with churn and a collector outage (not in CI).
    Soak(soak::Options),
    /// Build kspan (release) and run the benchmark suite into bench/RESULTS.md.
    Bench(bench::Options),
    /// The benchmarks' count-only OTLP/gRPC receiver (started by `bench`).
    #[command(hide = true)]
    OtlpSink(sink::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup(opts) => setup::run(&opts),
        Command::Run(opts) => run::run(&opts),
        Command::Test(opts) => test::run(&opts),
        Command::Fuzz(opts) => fuzz::run(&opts),
        Command::Soak(opts) => soak::run(&opts),
        Command::Bench(opts) => bench::run(&opts),
        Command::OtlpSink(opts) => sink::run(&opts),
    }
}

/// Runs a command, failing with its command line when it fails.
pub fn run_cmd(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let status = cmd.status().with_context(|| format!("failed to start {cmd:?}"))?;
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

/// Workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
