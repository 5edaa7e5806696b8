//! `cargo xtask test`: everything a fresh machine needs, then every test:
//! unit tests, and the integration tests that load the real programs.

use std::process::Command;

use crate::{run_cmd, setup, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name.
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    setup::run(&setup::Options::default())?;
    let root = workspace_root();
    run_cmd(
        Command::new("cargo")
            .current_dir(&root)
            .args(["test", "--no-fail-fast", "--package", "kspan", "--package", "kspan-common", "--package", "xtask"])
            .args(&opts.args)
            .env("KSPAN_TEST_VENV", setup::test_venv()),
    )
}
