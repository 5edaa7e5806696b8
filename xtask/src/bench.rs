//! `cargo xtask bench`: kspan's benchmark suite. Every benchmark measures
//! its variants side by side in the same run and reports ratios, because
//! absolute numbers on a shared 2-core machine drift from run to run.
//! Results go to bench/RESULTS.md.
//!
//! Every process a benchmark starts is a `procs::Proc`, stopped on drop, so
//! an error anywhere leaves nothing running; every wait polls for a
//! readiness signal with a bound, never a fixed sleep.

mod json;
mod ladder;
mod memory;
mod overhead;
mod parsers;
mod peers;
mod procs;
mod report;
mod sysinfo;
mod wrk;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{run_cmd, setup, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Short smoke version (under 2 minutes): one round per variant, 2 s runs,
    /// fewer ladder levels, 10k short-lived connections.
    #[arg(long)]
    pub quick: bool,
    /// Run only these benchmarks (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Only>,
    /// Benchmark this kspan binary instead of building target/release/kspan.
    #[arg(long)]
    pub kspan_bin: Option<PathBuf>,
    /// Where the report goes (relative to the repository root).
    #[arg(long, default_value = "bench/RESULTS.md")]
    pub out: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Only {
    /// 1a and 1b: nginx and the Python app, with and without kspan.
    Overhead,
    /// 1a: nginx only.
    OverheadNginx,
    /// 1c: nginx over HTTPS (the TLS probes' cost).
    OverheadNginxTls,
    /// 1b and 2: the Python app, baseline / kspan / OpenTelemetry SDK.
    OverheadPython,
    /// Same as overhead-python.
    Otel,
    /// 3: CPU per span (user space + BPF) at ~1k, ~10k req/s and max.
    Cost,
    /// 4: loss at rising rates.
    Loss,
    /// 5: kspan RSS at idle, with idle connections, after churn.
    Memory,
    /// 6: criterion parser benches.
    Parsers,
}

/// Python packages for the in-process comparison, pinned like
/// tests/requirements.txt (verified together on Python 3.11). Flask and
/// requests match the test venv, so chain_app.py is the same app.
const BENCH_REQUIREMENTS: &str = "flask==3.1.3\nrequests==2.34.2\nopentelemetry-distro==0.66b1\n\
     opentelemetry-exporter-otlp==1.45.1\nopentelemetry-instrumentation-flask==0.66b1\n";

/// Debian packages the benchmarks drive, by the command each gives.
const BENCH_PACKAGES: &[(&str, &str)] =
    &[("wrk", "/usr/bin/wrk"), ("nginx", "/usr/sbin/nginx"), ("bpftool", "/usr/sbin/bpftool"), ("openssl", "/usr/bin/openssl")];

/// What every benchmark needs to know.
pub struct Ctx {
    pub quick: bool,
    pub kspan: PathBuf,
    /// An optimised build of this program, for its `otlp-sink`: the
    /// receiver must not be what limits a benchmark.
    pub sink: PathBuf,
    pub test_venv: PathBuf,
    pub bench_venv: Option<PathBuf>,
    scratch_root: PathBuf,
}

impl Ctx {
    /// Rounds of alternating variants; medians are taken over them.
    pub fn reps(&self) -> usize {
        if self.quick { 1 } else { 3 }
    }

    pub fn run_duration(&self) -> Duration {
        Duration::from_secs(if self.quick { 2 } else { 6 })
    }

    /// A fresh directory for one benchmark's configs, logs and span files
    /// (kept after the run for post-mortems; cleared by the next run).
    pub fn scratch(&self, name: &str) -> anyhow::Result<PathBuf> {
        let d = self.scratch_root.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let want = |o: &[Only]| opts.only.is_empty() || opts.only.iter().any(|x| o.contains(x));
    let (do_nginx, do_python) = (want(&[Only::Overhead, Only::OverheadNginx]), want(&[Only::Overhead, Only::OverheadPython, Only::Otel]));
    let do_nginx_tls = want(&[Only::Overhead, Only::OverheadNginxTls]);
    let (do_cost, do_loss, do_memory, do_parsers) = (want(&[Only::Cost]), want(&[Only::Loss]), want(&[Only::Memory]), want(&[Only::Parsers]));
    let needs_agent = do_nginx || do_nginx_tls || do_python || do_cost || do_loss || do_memory;

    anyhow::ensure!(!needs_agent || is_root(), "the benchmarks load eBPF programs: run as root");
    let ctx = prepare(opts, needs_agent, do_python)?;
    let machine = sysinfo::describe_machine();

    // Each benchmark that fails is reported in place and the others still
    // run; the command fails at the end.
    let mut sections = Vec::new();
    let mut failed = Vec::new();
    // Section numbers (the issue's) this run rewrites in RESULTS.md.
    let mut rerun: Vec<&str> = Vec::new();
    let mut attempt = |keys: &[&'static str], name: &str, r: anyhow::Result<Vec<report::Section>>| {
        eprintln!("bench: {name} done at {:.0} s", started.elapsed().as_secs_f64());
        rerun.extend(keys);
        match r {
            Ok(s) => sections.extend(s),
            Err(e) => {
                eprintln!("bench: {name} FAILED: {e:#}");
                let mut s = report::Section::new(&format!("{}. {name}: failed", keys[0]));
                s.note(format!("```\n{e:#}\n```"));
                sections.push(s);
                failed.push(name.to_string());
            }
        }
    };
    if do_parsers {
        eprintln!("bench: parsers (criterion)");
        attempt(&["6"], "parsers", parsers::run(&ctx).map(|s| vec![s]));
    }
    if do_nginx {
        eprintln!("bench: overhead on nginx");
        attempt(&["1a"], "overhead (nginx)", overhead::nginx(&ctx).map(|s| vec![s]));
    }
    if do_nginx_tls {
        eprintln!("bench: overhead on nginx over HTTPS");
        attempt(&["1c"], "overhead (nginx over HTTPS)", overhead::nginx_tls(&ctx).map(|s| vec![s]));
    }
    if do_python {
        eprintln!("bench: overhead on the Python app, and the OpenTelemetry SDK");
        let r = overhead::python(&ctx, true).map(|(a, b)| [Some(a), b].into_iter().flatten().collect());
        attempt(&["1b", "2"], "overhead (Python)", r);
    }
    if do_cost || do_loss {
        eprintln!("bench: cost per span / loss ladder");
        let keys: &[&str] = match (do_cost, do_loss) {
            (true, true) => &["3", "4"],
            (true, false) => &["3"],
            _ => &["4"],
        };
        attempt(keys, "cost and loss", ladder::run(&ctx, &ladder::Want { cost: do_cost, loss: do_loss }));
    }
    if do_memory {
        eprintln!("bench: memory");
        attempt(&["5"], "memory", memory::run(&ctx).map(|s| vec![s]));
    }

    let path = workspace_root().join(&opts.out);
    let stamp = run_stamp(opts, &machine);
    let mut blocks: Vec<(String, String)> =
        sections.iter().map(|s| (section_key(&s.title), format!("{}{stamp}\n\n", s.markdown()))).collect();
    if !opts.only.is_empty() {
        // A partial run replaces its own sections and keeps the others
        // (each carries the stamp of the run that measured it).
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        blocks.extend(old_sections(&old).into_iter().filter(|(k, _)| !rerun.contains(&k.as_str())));
    }
    blocks.sort_by(|a, b| a.0.cmp(&b.0)); // "1a" < "1b" < "2" ... : the issue's order
    write_report(&path, opts, &machine, &blocks, started.elapsed())?;
    eprintln!("bench: wrote {} in {:.0} s", path.display(), started.elapsed().as_secs_f64());
    anyhow::ensure!(failed.is_empty(), "benchmarks failed: {}", failed.join(", "));
    Ok(())
}

/// Installs what is missing and builds kspan (release).
fn prepare(opts: &Options, needs_agent: bool, needs_sdk: bool) -> anyhow::Result<Ctx> {
    setup::run(&setup::Options::default())?;
    setup::ensure_debian_packages(BENCH_PACKAGES)?;
    let root = workspace_root();
    let kspan = match &opts.kspan_bin {
        Some(p) => p.canonicalize().with_context(|| format!("kspan binary {}", p.display()))?,
        None if needs_agent => {
            run_cmd(Command::new("cargo").current_dir(&root).args(["build", "--release", "--package", "kspan"]))?;
            root.join("target/release/kspan")
        }
        None => root.join("target/release/kspan"),
    };
    run_cmd(Command::new("cargo").current_dir(&root).args(["build", "--release", "--package", "xtask"]))?;
    let sink = root.join("target/release/xtask");
    let bench_venv = if needs_sdk { Some(ensure_bench_venv()?) } else { None };
    let scratch_root = root.join("target/bench");
    Ok(Ctx { quick: opts.quick, kspan, sink, test_venv: setup::test_venv(), bench_venv, scratch_root })
}

/// A venv apart from the test one, so the SDK's packages never change what
/// the tests run against. Re-installed only when the pins change.
fn ensure_bench_venv() -> anyhow::Result<PathBuf> {
    let venv = workspace_root().join("target/bench-venv");
    let stamp = venv.join(".kspan-bench-requirements");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == BENCH_REQUIREMENTS)
        && venv.join("bin/opentelemetry-instrument").exists()
    {
        return Ok(venv);
    }
    eprintln!("bench: creating {} (Flask, OpenTelemetry Python SDK)", venv.display());
    run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    let reqs = venv.join("requirements.txt");
    std::fs::write(&reqs, BENCH_REQUIREMENTS).context("writing the bench requirements")?;
    run_cmd(Command::new(venv.join("bin/pip")).args(["install", "-q", "-r"]).arg(&reqs))?;
    std::fs::write(&stamp, BENCH_REQUIREMENTS).context("writing the bench venv stamp")?;
    Ok(venv)
}

/// `1a` from `1a. Overhead ...`.
fn section_key(title: &str) -> String {
    title.split('.').next().unwrap_or(title).trim().to_string()
}

/// (key, markdown) of each `## ` section of an earlier RESULTS.md.
fn old_sections(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in md.split("\n## ").skip(1) {
        let title = part.lines().next().unwrap_or("");
        out.push((section_key(title), format!("## {}\n", part.trim_end())));
    }
    out
}

/// Which run measured a section: kept sections of a partial run keep theirs.
fn run_stamp(opts: &Options, machine: &[(String, String)]) -> String {
    let get = |k: &str| machine.iter().find(|(n, _)| n.starts_with(k)).map_or("?", |(_, v)| v.as_str());
    format!("<sub>Measured {} UTC, kspan {}, `{}`.</sub>", get("date"), get("kspan git rev"), command_line(opts))
}

fn command_line(opts: &Options) -> String {
    let mut cmd = String::from("cargo xtask bench");
    if opts.quick {
        cmd += " --quick";
    }
    if !opts.only.is_empty() {
        let names: Vec<String> = opts
            .only
            .iter()
            .filter_map(|o| clap::ValueEnum::to_possible_value(o).map(|v| v.get_name().to_string()))
            .collect();
        cmd += &format!(" --only {}", names.join(","));
    }
    cmd
}

fn write_report(
    path: &Path,
    opts: &Options,
    machine: &[(String, String)],
    blocks: &[(String, String)],
    took: Duration,
) -> anyhow::Result<()> {
    let cmd = command_line(opts);
    let mut md = format!(
        "# kspan benchmark results\n\nGenerated by `{cmd}` in {:.0} s; regenerate rather than edit. The machine is shared \
         and noisy: compare the ratios within a table (measured side by side in one run), not absolute numbers \
         across runs.{}\n\n",
        took.as_secs_f64(),
        if opts.only.is_empty() { "" } else { " Sections this run did not measure are kept from earlier runs (see each one's stamp)." }
    );
    let mut t = report::Table::new(&["machine", ""]);
    for (k, v) in machine {
        t.row(vec![k.clone(), v.clone()]);
    }
    md += &t.markdown();
    md.push('\n');
    for (_, block) in blocks {
        md += block;
        if !block.ends_with("\n\n") {
            md.push('\n');
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}
