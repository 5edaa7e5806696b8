//! The agent under test, run as a child process.

// Each integration test compiles its own copy of the harness and uses a
// subset of it; without this every test binary would warn about the rest.
#![allow(dead_code, unused_imports)]

use super::*;

/// A running kspan. Output goes to files in a [`TempDir`]; Drop stops it
/// (SIGTERM, then SIGKILL) so no eBPF program outlives a test.
pub struct Kspan {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    dir: TempDir,
}

/// What a stopped kspan left behind.
#[derive(Debug)]
pub struct KspanExit {
    pub status: ExitStatus,
    /// True if it ignored SIGTERM for [`STOP_TIMEOUT`] and was SIGKILLed.
    pub killed: bool,
    pub stdout: String,
    pub stderr: String,
}

impl KspanExit {
    /// Exited by itself with status 0 after SIGTERM.
    pub fn clean(&self) -> bool {
        !self.killed && self.status.success()
    }
    pub fn log(&self) -> String {
        format!(
            "--- kspan stderr ---\n{}\n--- kspan stdout ---\n{}",
            self.stderr, self.stdout
        )
    }
}

impl Kspan {
    /// The line kspan prints (stdout or stderr) once it is attached and exporting.
    pub const READY_MARKER: &'static str = "kspan ready";

    /// Runs [`kspan_bin`] with `args`, the inherited environment minus any
    /// `OTEL_*` variables (so the developer's shell can't change what a test
    /// sees), plus `envs`; waits for [`Self::READY_MARKER`].
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Result<Kspan> {
        Self::start_with_timeout(args, envs, KSPAN_READY_TIMEOUT)
    }

    /// kspan with `args`, exporting OTLP/gRPC to `receiver` with 100 ms
    /// batches (so spans arrive quickly); panics if it does not start.
    pub fn exporting_to(receiver: &Receiver, args: &[&str]) -> Kspan {
        Self::start(
            args,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ],
        )
        .expect("kspan starts")
    }

    pub fn start_with_timeout(
        args: &[&str],
        envs: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Kspan> {
        Self::start_bin(&kspan_bin(), args, envs, timeout)
    }

    /// Like [`Self::start`] with an explicit binary (e.g. a release build).
    pub fn start_bin(
        bin: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Kspan> {
        if !bin.exists() {
            bail!(
                "kspan binary {} not found (build it, or set KSPAN_BIN)",
                bin.display()
            );
        }
        let dir = TempDir::new()?;
        let stdout = dir.join("kspan.stdout");
        let stderr = dir.join("kspan.stderr");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?);
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("OTEL_")) {
                cmd.env_remove(k);
            }
        }
        cmd.envs(envs.iter().copied());
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut k = Kspan {
            child: Some(child),
            stdout,
            stderr,
            dir,
        };

        let mut exited = None;
        let ready = wait_until(timeout, POLL, || {
            if k.log_contains(Self::READY_MARKER) {
                return true;
            }
            exited = k.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            // Re-check: it may have printed the marker and then exited.
            exited.is_some() || k.log_contains(Self::READY_MARKER)
        });
        if ready && exited.is_none() {
            return Ok(k);
        }
        let cmdline = format!("{} {}", bin.display(), args.join(" "));
        match exited {
            Some(st) => {
                k.child = None; // already reaped; keep Drop from reporting it again
                bail!(
                    "kspan exited with {st} before becoming ready\ncommand: {cmdline}\n{}",
                    k.log()
                )
            }
            None => {
                let exit = k.stop_inner();
                bail!(
                    "kspan printed no `{}` within {timeout:?} (stopped: {})\ncommand: {cmdline}\n{}",
                    Self::READY_MARKER,
                    exit.as_ref()
                        .map(|e| e.status.to_string())
                        .unwrap_or_else(|e| e.to_string()),
                    exit.map(|e| e.log()).unwrap_or_else(|_| k.log())
                )
            }
        }
    }

    fn log_contains(&self, needle: &str) -> bool {
        read_log(&self.stderr).contains(needle) || read_log(&self.stdout).contains(needle)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Still running (not exited)?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// stderr then stdout so far, labelled.
    pub fn log(&self) -> String {
        format!(
            "--- kspan stderr ({}) ---\n{}\n--- kspan stdout ({}) ---\n{}",
            self.stderr.display(),
            read_log(&self.stderr),
            self.stdout.display(),
            read_log(&self.stdout)
        )
    }

    /// Waits until kspan's output contains `needle` (e.g. a log line proving
    /// it saw something); the error carries the log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        if wait_until(timeout, POLL, || self.log_contains(needle)) {
            Ok(())
        } else {
            bail!(
                "kspan did not log {needle:?} within {timeout:?}\n{}",
                self.log()
            )
        }
    }

    /// Sends SIGTERM (so kspan flushes its exporter and detaches), waits up
    /// to [`STOP_TIMEOUT`], then SIGKILLs. Check [`KspanExit::clean`].
    pub fn stop(mut self) -> Result<KspanExit> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<KspanExit> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("kspan already stopped"))?;
        let (status, killed) = terminate(&mut child, STOP_TIMEOUT);
        let status = status
            .ok_or_else(|| anyhow!("could not reap kspan (pid {})\n{}", child.id(), self.log()))?;
        Ok(KspanExit {
            status,
            killed,
            stdout: read_log(&self.stdout),
            stderr: read_log(&self.stderr),
        })
    }
}

impl Drop for Kspan {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Ok(exit) = self.stop_inner()
            && !exit.clean()
        {
            eprintln!(
                "kspan (dropped) did not stop cleanly: {}\n{}",
                exit.status,
                exit.log()
            );
        }
    }
}
