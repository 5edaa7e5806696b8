//! Benchmark 6: criterion's parser benches (agent/benches/parsers.rs) and
//! the whole user-space pipeline per span (agent/benches/pipeline.rs), run
//! with a short measurement time; read back from criterion's JSON.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::Context as _;

use super::{
    Ctx, json,
    report::{Section, Table},
};

pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let root = crate::workspace_root();
    let started = SystemTime::now();
    let (warm_up, measure) = if ctx.quick { ("0.5", "1") } else { ("1", "3") };
    let out = Command::new("cargo")
        .current_dir(&root)
        .args(["bench", "--package", "kspan", "--bench", "parsers", "--bench", "pipeline", "--"])
        .args(["--warm-up-time", warm_up, "--measurement-time", measure, "--noplot"])
        .output()
        .context("running cargo bench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{}", stdout.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("bench:   {l}\n")).collect::<String>());
    anyhow::ensure!(
        out.status.success(),
        "cargo bench failed: {}\n{}",
        out.status,
        crate::bench::procs::tail(&String::from_utf8_lossy(&out.stderr))
    );
    let facts = bench_facts(&stdout);
    let results = collect(&criterion_dir(&root), started)?;
    anyhow::ensure!(!results.is_empty(), "criterion wrote no estimates (looked under {})", criterion_dir(&root).display());

    let mut s = Section::new("6. Parser throughput and user-space cost per span (criterion)");
    s.result = Some(
        results
            .iter()
            .map(|r| {
                // Decoding borrows the payload, so its cost is per record, not per byte.
                if r.id.starts_with("decode") {
                    format!("`{}` {} per record", r.id, ns(r.median_ns))
                } else if let Some(spans) = r.id.starts_with("pipeline").then(|| exchanges(&facts, &r.id)).flatten() {
                    format!("`{}` {} per span", r.id, ns(r.median_ns / spans as f64))
                } else {
                    format!("`{}` {:.0} MB/s", r.id, r.bytes as f64 / r.median_ns * 1e3)
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    let mut t = Table::new(&["benchmark", "input per iteration", "time per iteration (median, 95% CI)", "throughput", "per item"]);
    for r in &results {
        let fact = facts.get(&r.id);
        let items = fact.and_then(|f| f.get("exchanges").or_else(|| f.get("records"))).copied();
        t.row(vec![
            format!("`{}`", r.id),
            match fact {
                Some(f) => f.iter().map(|(k, v)| format!("{v} {}", if *v == 1 { k.trim_end_matches('s') } else { k })).collect::<Vec<_>>().join(", "),
                None => format!("{} bytes", r.bytes),
            },
            format!("{} ({} – {})", ns(r.median_ns), ns(r.median_lo_ns), ns(r.median_hi_ns)),
            format!("**{:.0} MB/s**", r.bytes as f64 / r.median_ns * 1e3),
            items.map_or("-".into(), |n| {
                let per = r.median_ns / n as f64;
                let item = if r.id.starts_with("pipeline") {
                    "span"
                } else if fact.is_some_and(|f| f.contains_key("exchanges")) {
                    "exchange"
                } else {
                    "record"
                };
                format!("{} per {item}, {:.2} M/s", ns(per), 1e3 / per)
            }),
        ]);
    }
    s.tables.push(t);
    s.note(format!(
        "`cargo bench -p kspan --bench parsers -- --warm-up-time {warm_up} --measurement-time {measure}`; MB/s = captured \
         bytes handed to the parser per iteration / median iteration time (10^6 bytes/s), from \
         target/criterion/*/new/{{estimates,benchmark}}.json."
    ));
    s.note(
        "`http1/keepalive_mixed`: one keep-alive connection of 10 exchanges (JSON GETs, a POST and a chunked PUT with \
         bodies, a 24 KiB static file, two chunked responses, 204, 304, 404), each syscall a chunk, captured at the \
         default 4096 bytes (large writes arrive as a 4 KiB prefix plus a gap, as from the ring buffer). \
         `http1/small_gets`: 100 minimal GET/200 exchanges (the per-request fixed cost). A fresh `Http1Session` per \
         iteration, events (allocations included) built and counted.",
    );
    s.note(
        "`postgres/pgbench_prepared`, `redis/benchmark_pipelined`, `mysql/cli_session`: the PostgreSQL, Redis and \
         MySQL parsers replaying conversations recorded from real servers (tests/recordings: `pgbench -M prepared` \
         against PostgreSQL 15, `redis-benchmark -P 16` against Redis 7, a `mariadb` CLI session against MariaDB \
         10.11), each recorded read one syscall, captured at the default 4096 bytes; a fresh session per iteration.",
    );
    s.note("`decode/*`: `kspan::capture::decode::decode` on one ring-buffer data record (56-byte header + payload).");
    s.note(
        "`pipeline/nginx_keepalive`: kspan's user-space work per span without the machine's noise: 512 exchanges \
         as the kernel programs record a traced nginx (a GET read on one of 32 keep-alive connections, the \
         response head written with its 1 KiB body counted, not captured), decoded and run through the daemon's \
         `Pipeline` (connection table, stream, HTTP/1 parser, linker, span builder) and encoded as one OTLP \
         request, on one persistent pipeline as in the daemon. Left out: the channel to the export task, the \
         socket write, and waiting for the ring buffer, which table 3's end-to-end figure includes.",
    );
    s.note(
        "`http2/grpc_unary`: `kspan::protocol::http2::Http2Session` on a hand-built h2c (prior knowledge) \
         connection: preface, SETTINGS, WINDOW_UPDATE, then 32 unary gRPC calls (HEADERS + DATA each way, \
         trailers with grpc-status), HPACK-encoded as grpc-go does (incremental indexing on first use, indexed \
         after), every eighth response 12 KiB of DATA written frame by frame.",
    );
    Ok(s)
}

fn criterion_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from).join("criterion")
}

fn exchanges(facts: &BTreeMap<String, BTreeMap<String, u64>>, id: &str) -> Option<u64> {
    facts.get(id)?.get("exchanges").copied().filter(|n| *n > 0)
}

/// `kspan-bench: http1/x bytes=1 syscalls=2 exchanges=3` lines the bench prints.
fn bench_facts(stdout: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("kspan-bench: "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let id = words.next()?.to_string();
            let kv = words.filter_map(|w| w.split_once('=')).filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?))).collect();
            Some((id, kv))
        })
        .collect()
}

struct Estimate {
    id: String,
    bytes: u64,
    median_ns: f64,
    median_lo_ns: f64,
    median_hi_ns: f64,
}

/// Every `<id>/new/` criterion wrote since `since` (older ones are stale
/// benches from earlier runs).
fn collect(dir: &Path, since: SystemTime) -> anyhow::Result<Vec<Estimate>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            let est = p.join("new/estimates.json");
            let fresh = fs::metadata(&est).and_then(|m| m.modified()).is_ok_and(|m| m >= since);
            if fresh {
                out.push(read_estimate(&p.join("new")).with_context(|| format!("reading {}", est.display()))?);
            } else if p.file_name().is_some_and(|n| n != "report" && n != "new" && n != "base" && n != "change") {
                stack.push(p);
            }
        }
    }
    // Parsers first (http1, http2, databases), then decode, then the pipeline.
    out.sort_by_key(|e| (e.id.starts_with("pipeline"), e.id.starts_with("decode"), e.id.clone()));
    Ok(out)
}

fn read_estimate(new: &Path) -> anyhow::Result<Estimate> {
    let est = json::parse(&fs::read_to_string(new.join("estimates.json"))?)?;
    let bench = json::parse(&fs::read_to_string(new.join("benchmark.json"))?)?;
    let f = |v: &json::Json, p: &str| v.path(p).and_then(json::Json::as_f64).with_context(|| format!("no {p}"));
    let bytes = ["throughput.Bytes", "throughput.BytesDecimal"].iter().find_map(|p| f(&bench, p).ok()).unwrap_or(0.0);
    Ok(Estimate {
        id: bench.get("full_id").and_then(json::Json::as_str).unwrap_or("?").to_string(),
        bytes: bytes as u64,
        median_ns: f(&est, "median.point_estimate")?,
        median_lo_ns: f(&est, "median.confidence_interval.lower_bound")?,
        median_hi_ns: f(&est, "median.confidence_interval.upper_bound")?,
    })
}

fn ns(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} µs", v / 1e3)
    } else {
        format!("{v:.1} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fresh_criterion_results_only() {
        let dir = std::env::temp_dir().join(format!("kspan-xtask-criterion-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let new = dir.join("http1/keepalive_mixed/new");
        fs::create_dir_all(&new).unwrap();
        let ci = r#"{"confidence_level":0.95,"lower_bound":7400.0,"upper_bound":7500.0}"#;
        let est = format!(
            r#"{{"mean":{{"confidence_interval":{ci},"point_estimate":7450.0,"standard_error":1.0}},
               "median":{{"confidence_interval":{ci},"point_estimate":7449.5,"standard_error":1.0}}}}"#
        );
        fs::write(new.join("estimates.json"), est).unwrap();
        fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"http1","function_id":"keepalive_mixed","throughput":{"Bytes":21854},"full_id":"http1/keepalive_mixed"}"#,
        )
        .unwrap();
        let before = SystemTime::now() - std::time::Duration::from_secs(60);
        let found = collect(&dir, before).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].id.as_str(), found[0].bytes, found[0].median_ns), ("http1/keepalive_mixed", 21854, 7449.5));
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert!(collect(&dir, later).unwrap().is_empty(), "stale results are skipped");
        let facts = bench_facts("x\nkspan-bench: http1/keepalive_mixed bytes=21854 syscalls=34 exchanges=10\n");
        assert_eq!(facts["http1/keepalive_mixed"]["exchanges"], 10);
        fs::remove_dir_all(&dir).unwrap();
    }
}
