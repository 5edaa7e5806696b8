//! `cargo xtask run`: build kspan in release mode and run it (as root).

use std::process::Command;

use crate::{run_cmd, setup, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Arguments passed to kspan (after `--`), e.g. `-- --open-ports 8080`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    setup::run(&setup::Options { toolchain_only: true })?;
    let root = workspace_root();
    run_cmd(Command::new("cargo").current_dir(&root).args(["build", "--release", "--package", "kspan"]))?;
    let bin = root.join("target/release/kspan");
    let mut cmd = if is_root() {
        Command::new(&bin)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&bin);
        sudo
    };
    run_cmd(cmd.args(&opts.args))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}
