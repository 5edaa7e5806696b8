//! One line per span on stdout, as readable text or as JSON.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::ratelimit::{LOG_INTERVAL, RateLimitedLog};
use crate::span::model::{AttrValue, Span, SpanKind, SpanStatus};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}

/// Prints on a thread of its own: stdout may be a slow pipe or a stalled
/// terminal, and a blocked write must stall neither tokio workers nor the
/// pipeline (the bounded queue in front absorbs it, then drops). The thread
/// ends when all senders are gone; the returned receiver fires then.
/// On EPIPE it sets `stopped` and ends early, so submitters can stop feeding it.
pub(crate) fn spawn(
    format: Format,
    rx: mpsc::Receiver<Span>,
    stopped: Arc<AtomicBool>,
) -> io::Result<oneshot::Receiver<()>> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("kspan-printer".into())
        .spawn(move || {
            print_all(format, rx, || io::stdout().lock(), &stopped);
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}

/// `lock` is called once per span, so lines of concurrent writers (the agent's
/// own log goes to stderr, but still) never interleave mid-line.
pub(crate) fn print_all<W: Write>(
    format: Format,
    mut rx: mpsc::Receiver<Span>,
    mut lock: impl FnMut() -> W,
    stopped: &AtomicBool,
) {
    let error_log = RateLimitedLog::new(LOG_INTERVAL);
    let mut line = String::new();
    while let Some(span) = rx.blocking_recv() {
        line.clear();
        match format {
            Format::Text => write_text(&mut line, &span),
            Format::Json => write_json(&mut line, &span),
        }
        line.push('\n');
        let mut out = lock();
        match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                // `kspan | head`: the reader is gone for good.
                debug!("stdout closed, span printing stopped");
                stopped.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                if let Some(suppressed) = error_log.check() {
                    warn!(error = %e, similar_errors_suppressed = suppressed, "printing span failed");
                }
            }
        }
    }
}

fn kind_str(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `HH:MM:SS.mmm SERVICE KIND NAME STATUS DURATIONms trace=.. span=.. parent=.. [key attrs]`
pub(crate) fn write_text(out: &mut String, span: &Span) {
    let dur = span.end_unix_nanos.saturating_sub(span.start_unix_nanos);
    let status = match &span.status {
        SpanStatus::Unset => "OK".to_owned(),
        SpanStatus::Error { message } if message.is_empty() => "ERROR".to_owned(),
        SpanStatus::Error { message } => format!("ERROR({})", clean(message)),
    };
    let _ = write!(
        out,
        "{} {} {} {} {} {}.{:03}ms trace={} span={} parent={}",
        local_time(span.start_unix_nanos),
        clean(&span.resource.service_name),
        kind_str(span.kind),
        clean(&span.name),
        status,
        dur / 1_000_000,
        (dur / 1_000) % 1_000,
        hex(&span.trace_id),
        hex(&span.span_id),
        span.parent_span_id
            .map_or_else(|| "-".to_owned(), |p| hex(&p)),
    );
    let code = span
        .attr("http.response.status_code")
        .or_else(|| span.attr("rpc.grpc.status_code"));
    if let Some(code) = code {
        let _ = write!(out, " status_code={}", display(code));
    }
    // Who is on the other end: the peer as seen on the wire, else the
    // logical server / client address.
    let (addr, port) = match span.kind {
        SpanKind::Client => ("server.address", "server.port"),
        SpanKind::Server => ("client.address", "client.port"),
    };
    let peer = span
        .attr("network.peer.address")
        .map(|a| (a, span.attr("network.peer.port")))
        .or_else(|| span.attr(addr).map(|a| (a, span.attr(port))));
    if let Some((a, p)) = peer {
        let a = display(a);
        let a = if a.contains(':') { format!("[{a}]") } else { a };
        match p {
            Some(p) => {
                let _ = write!(out, " peer={a}:{}", display(p));
            }
            None => {
                let _ = write!(out, " peer={a}");
            }
        }
    }
}

/// Names, messages and addresses come from captured traffic: escape control
/// characters so a span can neither break the one-line format nor send
/// escape sequences to the terminal. (JSON output is escaped by serde.)
fn clean(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

fn display(v: &AttrValue) -> String {
    match v {
        AttrValue::Str(s) => clean(s).into_owned(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Bool(b) => b.to_string(),
    }
}

/// Local wall-clock `HH:MM:SS.mmm`; falls back to UTC if the C library cannot
/// convert (no std API knows the local time zone).
fn local_time(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let millis = (unix_nanos / 1_000_000) % 1_000;
    let t = libc::time_t::try_from(secs).unwrap_or(0);
    // SAFETY: `tm` is plain old data, so all-zero is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r is the reentrant variant and both pointers are valid
    // for the duration of the call.
    let converted = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    let (h, m, s) = if converted {
        (tm.tm_hour as u64, tm.tm_min as u64, tm.tm_sec as u64)
    } else {
        ((secs / 3600) % 24, (secs / 60) % 60, secs % 60)
    };
    format!("{h:02}:{m:02}:{s:02}.{millis:03}")
}

#[derive(Serialize)]
struct JsonSpan<'a> {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    parent_is_remote: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    trace_state: &'a str,
    kind: &'static str,
    name: &'a str,
    start_unix_nanos: u64,
    end_unix_nanos: u64,
    duration_ns: u64,
    status: JsonStatus<'a>,
    service_name: &'a str,
    resource: Attrs<'a>,
    attributes: Attrs<'a>,
}

#[derive(Serialize)]
struct JsonStatus<'a> {
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// Attributes as one JSON object, values keeping their type.
struct Attrs<'a>(Vec<(&'a str, &'a AttrValue)>);

impl Serialize for Attrs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            match v {
                AttrValue::Str(s) => map.serialize_entry(k, &**s)?,
                AttrValue::Int(i) => map.serialize_entry(k, i)?,
                AttrValue::Bool(b) => map.serialize_entry(k, b)?,
            }
        }
        map.end()
    }
}

pub(crate) fn write_json(out: &mut String, span: &Span) {
    let (code, message) = match &span.status {
        SpanStatus::Unset => ("UNSET", None),
        SpanStatus::Error { message } => ("ERROR", Some(message.as_str())),
    };
    let json = JsonSpan {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: span.parent_span_id.map(|p| hex(&p)),
        parent_is_remote: span.parent_is_remote,
        trace_state: &span.trace_state,
        kind: kind_str(span.kind),
        name: &span.name,
        start_unix_nanos: span.start_unix_nanos,
        end_unix_nanos: span.end_unix_nanos,
        duration_ns: span.end_unix_nanos.saturating_sub(span.start_unix_nanos),
        status: JsonStatus { code, message },
        service_name: &span.resource.service_name,
        resource: Attrs(
            span.resource
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v))
                .collect(),
        ),
        attributes: Attrs(span.attributes.iter().map(|a| (a.key, &a.value)).collect()),
    };
    // Serializing plain strings and numbers into a String cannot fail; an
    // empty object still keeps the output one-line-per-span if it somehow does.
    out.push_str(&serde_json::to_string(&json).unwrap_or_else(|_| "{}".to_owned()));
}

#[cfg(test)]
#[path = "printer_tests.rs"]
mod tests;
