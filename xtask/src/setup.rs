//! Makes a fresh machine ready. Idempotent: each step checks first, so a
//! ready machine passes through in well under a second.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{run_cmd, workspace_root};

/// The nightly that builds the kernel programs (same as agent/build.rs).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

/// Debian packages the integration tests drive, by the command each gives.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("nginx", "/usr/sbin/nginx"),
    ("curl", "/usr/bin/curl"),
    ("nodejs", "/usr/bin/node"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("iproute2", "/usr/sbin/ip"),
    ("postgresql", "/usr/lib/postgresql/15/bin/initdb"),
    ("redis-server", "/usr/bin/redis-server"),
    ("redis-tools", "/usr/bin/redis-cli"),
    ("mariadb-server", "/usr/sbin/mariadbd"),
    ("mariadb-client", "/usr/bin/mariadb"),
    // tests/traces.rs runs a Java service with the source launcher (a JDK's)
    // and builds a Go one.
    ("openjdk-17-jdk-headless", "/usr/lib/jvm/java-17-openjdk-amd64/bin/javac"),
    ("golang-go", "/usr/bin/go"),
    // tests/kernels.rs boots another kernel with kspan in an initramfs.
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("busybox-static", "/bin/busybox"),
    ("cpio", "/usr/bin/cpio"),
    // tests/deploy.rs verifies the systemd unit.
    ("systemd", "/usr/bin/systemd-analyze"),
];

/// The older kernel tests/kernels.rs boots: Debian 12's (6.1), the kernel
/// of many production nodes, with kprobes but no socket tracepoints.
const GUEST_KERNEL_PACKAGE: &str = "linux-image-amd64";

#[derive(clap::Args, Default)]
pub struct Options {
    /// Only the build toolchain (nightly, rust-src, bpf-linker): no test peers.
    #[arg(long)]
    pub toolchain_only: bool,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    ensure_nightly()?;
    ensure_bpf_linker()?;
    if !opts.toolchain_only {
        ensure_debian_packages(TEST_PACKAGES)?;
        ensure_test_venv()?;
        ensure_guest_kernel()?;
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ensure_nightly() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", EBPF_TOOLCHAIN]))
        .is_some_and(|list| list.lines().any(|l| l.starts_with("rust-src")));
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing {EBPF_TOOLCHAIN} with rust-src");
    run_cmd(Command::new("rustup").args([
        "toolchain", "install", EBPF_TOOLCHAIN, "--profile", "minimal", "--component", "rust-src",
    ]))
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let out = output(Command::new("rustc").arg(format!("+{EBPF_TOOLCHAIN}")).args(["--print", "sysroot"]))
        .context("rustc of the eBPF toolchain does not run")?;
    Ok(PathBuf::from(out.trim()))
}

/// bpf-linker must use the same LLVM as the nightly rustc, so it is built
/// against that toolchain's own libLLVM (no prebuilt download exists).
fn ensure_bpf_linker() -> anyhow::Result<()> {
    let sysroot = nightly_sysroot()?;
    let libllvm = std::fs::read_dir(sysroot.join("lib"))
        .context("reading the toolchain's lib directory")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .context("the eBPF toolchain ships no libLLVM.so.*-rust-*")?;
    // "libLLVM.so.22.1-rust-1.97.0-nightly" -> llvm-22
    let major = libllvm.trim_start_matches("libLLVM.so.").split(['.', '-']).next().unwrap_or("");
    let stamp = sysroot.join("lib").join(".kspan-bpf-linker");
    let have_linker = output(Command::new("bpf-linker").arg("--version")).is_some();
    if have_linker && std::fs::read_to_string(&stamp).is_ok_and(|s| s == libllvm) {
        return Ok(());
    }
    let link = sysroot.join("lib").join("libLLVM.so");
    if !link.exists() {
        std::os::unix::fs::symlink(&libllvm, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!("xtask: building bpf-linker against {libllvm} (about a minute)");
    run_cmd(
        Command::new("cargo")
            .arg(format!("+{EBPF_TOOLCHAIN}"))
            .args(["install", "bpf-linker", "--no-default-features", "--features", &format!("llvm-{major}")])
            .env("LLVM_PREFIX", &sysroot),
    )?;
    std::fs::write(&stamp, &libllvm).context("writing the bpf-linker stamp")?;
    Ok(())
}

/// Installs the (package, command) pairs whose command is missing.
pub fn ensure_debian_packages(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> =
        packages.iter().filter(|(_, bin)| !Path::new(bin).exists()).map(|(pkg, _)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages {missing:?}");
    run_cmd(Command::new("apt-get").arg("update").arg("-q"))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    // The nginx package starts a system nginx on :80; tests and benches run their own.
    // So do postgresql and redis-server on their default ports.
    for service in ["nginx", "postgresql", "redis-server", "mariadb"] {
        let _ = Command::new("systemctl").args(["disable", "--now", service]).output();
    }
    Ok(())
}

/// Where the guest kernel's `vmlinuz-*` is unpacked.
pub fn guest_kernels() -> PathBuf {
    workspace_root().join("target").join("kernels")
}

/// Unpacks the vmlinuz of Debian's current kernel package (downloaded, not
/// installed) into target/kernels.
fn ensure_guest_kernel() -> anyhow::Result<()> {
    let dir = guest_kernels();
    let has_kernel = |dir: &Path| {
        std::fs::read_dir(dir).is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-")))
    };
    if has_kernel(&dir) {
        return Ok(());
    }
    let depends = output(Command::new("apt-cache").args(["depends", GUEST_KERNEL_PACKAGE])).unwrap_or_default();
    let image = depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: ").filter(|p| p.starts_with("linux-image-")))
        .with_context(|| format!("apt-cache names no kernel image for {GUEST_KERNEL_PACKAGE}"))?
        .to_owned();
    eprintln!("xtask: downloading {image} for the kernel test");
    let unpack = dir.join("unpack");
    std::fs::create_dir_all(&unpack).with_context(|| format!("creating {}", unpack.display()))?;
    let download = || run_cmd(Command::new("apt-get").args(["download", "-q", &image]).current_dir(&unpack));
    if download().is_err() {
        run_cmd(Command::new("apt-get").arg("update").arg("-q"))?;
        download()?;
    }
    let deb = std::fs::read_dir(&unpack)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpack))?;
    for entry in std::fs::read_dir(unpack.join("boot"))?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("vmlinuz-") {
            std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
        }
    }
    std::fs::remove_dir_all(&unpack)?;
    anyhow::ensure!(has_kernel(&dir), "{} has no boot/vmlinuz-*", deb.display());
    Ok(())
}

pub fn test_venv() -> PathBuf {
    workspace_root().join("target").join("test-venv")
}

/// PyPI peers live in a virtualenv under target/, never in the system
/// Python. Re-installed only when tests/requirements.txt changes.
fn ensure_test_venv() -> anyhow::Result<()> {
    let venv = test_venv();
    let requirements = workspace_root().join("tests").join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).context("reading tests/requirements.txt")?;
    let stamp = venv.join(".kspan-requirements");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && venv.join("bin/python3").exists() {
        return Ok(());
    }
    eprintln!("xtask: creating {} with tests/requirements.txt", venv.display());
    run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run_cmd(Command::new(venv.join("bin/pip")).args(["install", "-q", "-r"]).arg(&requirements))?;
    std::fs::write(&stamp, wanted).context("writing the venv stamp")?;
    Ok(())
}
