//! Load generation with Debian's `wrk`, and parsing of its report.

use std::{path::Path, process::Command, time::Duration};

use anyhow::Context as _;

/// How wrk drives the server.
#[derive(Debug, Clone)]
pub struct Load {
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
    /// Offered requests per second in total, on a fixed schedule (see
    /// [`PACING_SCRIPT`]); `None`: each connection as fast as answers come.
    pub rate: Option<u32>,
    /// `Connection: close` on every request: one TCP connection per request.
    pub close: bool,
}

impl Load {
    pub fn max(threads: u32, connections: u32, duration: Duration) -> Load {
        Load { threads, connections, duration, rate: None, close: false }
    }

    /// `rate` req/s in total on a fixed schedule. Enough connections that
    /// each waits about [`PACED_CYCLE_MS`] for its next slot, so a response
    /// comes back long before the schedule needs its connection again. The
    /// achieved rate is measured and reported, never assumed.
    pub fn paced(rate: u32, duration: Duration) -> Load {
        let connections = (rate * PACED_CYCLE_MS).div_ceil(1000).max(1);
        Load { threads: connections.min(2), connections, duration, rate: Some(rate), close: false }
    }

    pub fn describe(&self) -> String {
        let mut s = format!("wrk -t{} -c{} -d{}s", self.threads, self.connections, self.duration.as_secs_f64());
        if let Some(rate) = self.rate {
            s += &format!(" (paced to {rate} req/s)");
        }
        if self.close {
            s += " -H 'Connection: close'";
        }
        s
    }
}

/// Connections of a paced load cycle through the schedule about this often.
pub const PACED_CYCLE_MS: u32 = 10;

/// A fixed request rate per wrk thread, which wrk itself has no option for.
/// Each request takes the thread's next slot, `1000 / rate` ms after the
/// previous one, and `delay()` holds it until then: arrivals are spread
/// evenly over time. A think time per connection instead (wrk's usual
/// `delay()`) keeps connections that started together in step, so requests
/// arrive in bursts of all connections at once and p99 measures how long the
/// server takes to clear a burst. `delay()` counts whole milliseconds, so
/// requests still leave in one-millisecond groups. Debian's wrk embeds
/// LuaJIT, whose FFI reads the monotonic clock.
pub const PACING_SCRIPT: &str = r#"local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } pacing_timespec;
int clock_gettime(int clock, pacing_timespec *ts);
]]
local ts = ffi.new("pacing_timespec")
local CLOCK_MONOTONIC = 1
local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local gap_ms, next_ms

function init(args)
  gap_ms = 1000 / tonumber(args[1])
end

function delay()
  local now = now_ms()
  -- Behind schedule (a slow server): restart from now instead of sending
  -- the missed requests in a burst; the achieved rate shows the shortfall.
  next_ms = math.max((next_ms or now) + gap_ms, now)
  return math.floor(next_ms - now)
end
"#;

/// What one wrk run reported.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// connect + read + write + timeout errors, and non-2xx/3xx responses.
    pub errors: u64,
}

pub fn run(url: &str, load: &Load, scratch: &Path) -> anyhow::Result<WrkResult> {
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        .arg("--latency")
        .arg("--timeout")
        .arg("5s");
    if load.close {
        cmd.args(["-H", "Connection: close"]);
    }
    if let Some(rate) = load.rate {
        let script = scratch.join("paced.lua");
        std::fs::write(&script, PACING_SCRIPT).context("writing the wrk Lua script")?;
        // wrk gives each thread its own Lua state and an equal share of the connections.
        let per_thread = f64::from(rate) / f64::from(load.threads.max(1));
        cmd.arg("-s").arg(&script).arg(url).arg("--").arg(format!("{per_thread}"));
    } else {
        cmd.arg(url);
    }
    let out = cmd.output().context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "wrk failed: {}\n{}{}", out.status, text, String::from_utf8_lossy(&out.stderr));
    parse(&text).with_context(|| format!("parsing wrk's report:\n{text}"))
}

fn parse(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_us = duration_us(v)?,
            ["99%", v] => r.p99_us = duration_us(v)?,
            [n, "requests", "in", secs, ..] => {
                r.requests = n.parse()?;
                r.seconds = duration_us(secs.trim_end_matches(','))? / 1e6;
            }
            ["Requests/sec:", v] => r.rps = v.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>()?,
            _ => {}
        }
    }
    anyhow::ensure!(r.requests > 0 && r.seconds > 0.0, "no requests completed");
    Ok(r)
}

/// `250.00us`, `1.20ms`, `2.00s`, `3.00m` -> microseconds.
fn duration_us(v: &str) -> anyhow::Result<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).with_context(|| format!("no unit in {v:?}"))?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("bad number in {v:?}"))?;
    Ok(n * match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => anyhow::bail!("unknown unit in {v:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_report() {
        let r = parse(
            "Running 10s test @ http://127.0.0.1:8080/\n  2 threads and 32 connections\n\
             \x20 Latency Distribution\n     50%  250.00us\n     75%  400.00us\n     90%  700.00us\n     99%    1.20ms\n\
             \x20 123456 requests in 10.00s, 12.34MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n\
             Requests/sec:  12345.67\nTransfer/sec:      1.23MB\n",
        )
        .unwrap();
        assert_eq!((r.requests, r.errors), (123456, 3));
        assert_eq!((r.p50_us, r.p99_us, r.seconds), (250.0, 1200.0, 10.0));
        assert!((r.rps - 12345.67).abs() < 1e-9);
    }
}
