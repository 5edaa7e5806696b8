//! kspan on another kernel than the host's: Debian 12's 6.1 (the kernel of
//! many production nodes), booted under qemu with kspan, busybox and the
//! libraries they need in an initramfs. There kspan must load every program
//! its capture path needs (syscall tracepoints: 6.1 has no socket ones),
//! its propagation programs with whatever fallback 6.1 needs, and turn a
//! busybox wget to busybox httpd into a linked CLIENT and SERVER span.
//!
//! The kernel comes from `cargo xtask setup` (target/kernels/vmlinuz-*).
//! qemu emulates the CPU (TCG): nested KVM here cannot run Debian's kernel,
//! and emulation makes the test independent of the host's CPU.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use support::*;

/// Runs as the guest's /init. Lines starting `KM` are the test's to read;
/// the rest of the console is the kernel's.
const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /sys/fs/cgroup /tmp && mount -t cgroup2 none /sys/fs/cgroup
ifconfig lo 127.0.0.1 up
echo "KM kernel $(cat /proc/sys/kernel/osrelease)"
/bin/kspan --print text --propagate headers > /tmp/kspan.out 2>&1 &
K=$!
i=0
while ! grep -q "kspan ready" /tmp/kspan.out && kill -0 $K 2>/dev/null && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
if grep -q "kspan ready" /tmp/kspan.out; then
  echo "hello from the guest" > /www/index.html
  httpd -p 127.0.0.1:8080 -h /www
  wget -q -O /tmp/got http://127.0.0.1:8080/index.html
  echo "KM wget rc=$? got=$(cat /tmp/got)"
  i=0
  while [ "$(grep -c ' GET /index.html ' /tmp/kspan.out)" -lt 2 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  kill -INT $K
  i=0
  while kill -0 $K 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
fi
sed 's/^/KM| /' /tmp/kspan.out
echo "KM end"
poweroff -f
"#;

const BUSYBOX_APPLETS: &[&str] =
    &["sh", "mount", "mkdir", "cat", "grep", "sleep", "httpd", "wget", "echo", "poweroff", "kill", "sed", "ifconfig"];

fn guest_kernel() -> anyhow::Result<PathBuf> {
    let dir = repo_root().join("target/kernels");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|d| d.flatten().map(|e| e.path()).find(|p| p.to_string_lossy().contains("vmlinuz-")))
        .ok_or_else(|| anyhow::anyhow!("no vmlinuz-* in {} (run `cargo xtask setup`)", dir.display()))
}

/// Copies `bin` to `root/bin` and the shared libraries `ldd` names to
/// their own paths under `root`.
fn install(root: &Path, bin: &Path) -> anyhow::Result<()> {
    let name = bin.file_name().ok_or_else(|| anyhow::anyhow!("{} has no file name", bin.display()))?;
    std::fs::copy(bin, root.join("bin").join(name))?;
    let ldd = Command::new("ldd").arg(bin).output()?;
    for lib in String::from_utf8_lossy(&ldd.stdout).split_whitespace().filter(|w| w.starts_with('/')) {
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap_or(root))?;
        std::fs::copy(lib, &to)?;
    }
    Ok(())
}

fn initramfs(dir: &TempDir) -> anyhow::Result<PathBuf> {
    let root = dir.join("root");
    for sub in ["bin", "proc", "sys", "dev", "tmp", "www"] {
        std::fs::create_dir_all(root.join(sub))?;
    }
    install(&root, &kspan_bin())?;
    install(&root, &which("busybox")?)?;
    for applet in BUSYBOX_APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    let init = root.join("init");
    std::fs::write(&init, INIT)?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let image = dir.join("initramfs.cpio");
    let cpio = Command::new("sh")
        .arg("-c")
        .arg(format!("find . | cpio -o -H newc > {}", image.display()))
        .current_dir(&root)
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(cpio.success(), "cpio failed");
    Ok(image)
}

/// What the guest printed on its console, after it powered off.
fn boot(kernel: &Path, initramfs: &Path) -> anyhow::Result<String> {
    let mut qemu = Command::new("timeout");
    qemu.args(["300", "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024", "-nographic"])
        .args(["-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null());
    let out = qemu.output()?;
    Ok(String::from_utf8_lossy(&out.stdout).replace('\r', ""))
}

/// `key=value` of a span line printed by `--print text`.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn loads_and_traces_on_debian_6_1() {
    let Some(kernel) = require("guest kernel", guest_kernel()) else { return };
    if require_cmd("qemu-system-x86_64").is_none() || require_cmd("busybox").is_none() || require_cmd("cpio").is_none()
    {
        return;
    }
    let dir = TempDir::new().unwrap();
    let image = initramfs(&dir).expect("initramfs");
    let console = boot(&kernel, &image).expect("qemu runs");
    // The firmware's escape sequences can share a line with the first one.
    let guest: Vec<&str> = console.lines().filter_map(|l| l.find("KM").map(|at| &l[at..])).collect();
    let report = guest.join("\n");
    assert!(guest.iter().any(|l| l.starts_with("KM kernel 6.1.")), "the guest did not run 6.1:\n{console}");
    assert!(report.contains("kspan ready"), "kspan did not load on 6.1:\n{report}");
    assert!(report.contains("capturing on syscall tracepoints"), "{report}");
    // The TLS programs load, OpenSSL's and Go's (the guest has nothing to
    // attach them to); either warning would say "TLS plaintext capture is off".
    assert!(!report.contains("TLS plaintext capture is off"), "{report}");
    // Propagation: 6.1 needs no verdict, and its connect hooks can tell
    // which process opens a connection, so only traced ones are enrolled.
    assert!(report.contains("sockmap receive path is sound"), "{report}");
    assert!(!report.contains("every outgoing connection is enrolled"), "{report}");
    assert!(report.contains("KM wget rc=0 got=hello from the guest"), "{report}");
    let span = |kind: &str| {
        guest
            .iter()
            .find(|l| l.contains(&format!(" {kind} GET /index.html OK ")))
            .unwrap_or_else(|| panic!("no {kind} span for the request:\n{report}"))
    };
    let (client, server) = (span("CLIENT"), span("SERVER"));
    assert_eq!(field(server, "status_code"), Some("200"), "{server}");
    assert_eq!(field(server, "trace"), field(client, "trace"), "one trace:\n{client}\n{server}");
    assert_eq!(field(server, "parent"), field(client, "span"), "SERVER is the CLIENT's child:\n{client}\n{server}");
    assert!(report.contains("kspan stopped"), "kspan did not stop cleanly:\n{report}");
    assert!(!report.contains("panicked"), "{report}");
}
