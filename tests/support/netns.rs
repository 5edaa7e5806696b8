//! Named network namespaces (`ip netns`), removed on Drop.

#![allow(dead_code, unused_imports)]

use std::process::Command;

use anyhow::{Result, ensure};

/// Runs `ip` with `args`; a failure carries its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output()?;
    ensure!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A network namespace of its own (`ip netns add`), deleted on Drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: String) -> Result<Self> {
        ip(&["netns", "add", &name])?;
        Ok(Self { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What `--netns` takes.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `program` run inside the namespace.
    pub fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}
