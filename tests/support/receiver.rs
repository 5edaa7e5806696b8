//! The OTLP receiver (tests/otlp_receiver.py) and the spans it got.

// Each integration test compiles its own copy of the harness and uses a
// subset of it; without this every test binary would warn about the rest.
#![allow(dead_code, unused_imports)]

use super::*;

/// A running tests/otlp_receiver.py on ephemeral ports.
pub struct Receiver {
    /// `http://127.0.0.1:P` for OTLP/gRPC.
    pub grpc_endpoint: String,
    /// `http://127.0.0.1:P` base for OTLP/HTTP (append `/v1/traces` yourself
    /// if the client wants the full URL; OTEL_EXPORTER_OTLP_ENDPOINT doesn't).
    pub http_endpoint: String,
    pub grpc_port: u16,
    pub http_port: u16,
    out: PathBuf,
    log: PathBuf,
    // Mutex: wait_for takes &self but must try_wait() to notice a dead receiver.
    child: Mutex<Child>,
    dir: TempDir,
}

#[derive(Deserialize)]
struct ReadyInfo {
    grpc: u16,
    http: u16,
    /// Started with `--tls-cert`: both transports speak TLS.
    #[serde(default)]
    tls: bool,
}

impl Receiver {
    pub fn start() -> Result<Receiver> {
        Self::start_with(&[])
    }

    /// Extra receiver arguments, e.g. `&["--fail-first", "2"]`.
    pub fn start_with(args: &[&str]) -> Result<Receiver> {
        let py = check_python()?;
        let script = receiver_script();
        let dir = TempDir::new()?;
        let out = dir.join("spans.jsonl");
        let ready = dir.join("receiver-ready.json");
        let log = dir.join("receiver.log");
        let (so, se) = log_stdio(&log)?;
        let mut child = Command::new(&py)
            .arg(&script)
            .args(["--grpc-port", "0", "--http-port", "0", "--out"])
            .arg(&out)
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            .stdin(Stdio::null())
            .stdout(so)
            .stderr(se)
            // Unbuffered so the log is complete even if we SIGKILL it.
            .env("PYTHONUNBUFFERED", "1")
            .spawn()
            .with_context(|| format!("spawning {} {}", py.display(), script.display()))?;

        let mut info: Option<ReadyInfo> = None;
        let mut exited = None;
        wait_until(RECEIVER_READY_TIMEOUT, POLL, || {
            // The receiver renames the file into place, so a read either
            // fails or sees the whole JSON document.
            if let Ok(text) = fs::read_to_string(&ready) {
                info = serde_json::from_str(&text).ok();
            }
            if info.is_none() {
                exited = child.try_wait().ok().flatten();
            }
            info.is_some() || exited.is_some()
        });
        let Some(info) = info else {
            let why = match exited {
                Some(st) => format!("exited with {st} before becoming ready"),
                None => {
                    terminate(&mut child, Duration::ZERO);
                    format!("not ready after {RECEIVER_READY_TIMEOUT:?}")
                }
            };
            bail!(
                "otlp receiver {why}; its log ({}):\n{}",
                log.display(),
                read_log(&log)
            );
        };
        let scheme = if info.tls { "https" } else { "http" };
        Ok(Receiver {
            grpc_endpoint: format!("{scheme}://127.0.0.1:{}", info.grpc),
            http_endpoint: format!("{scheme}://127.0.0.1:{}", info.http),
            grpc_port: info.grpc,
            http_port: info.http,
            out,
            log,
            child: Mutex::new(child),
            dir,
        })
    }

    /// The JSON-lines file the receiver appends spans to.
    pub fn out_path(&self) -> &Path {
        &self.out
    }

    /// The receiver's stdout+stderr (one line per export request received).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// All spans received so far, in arrival order. Panics on a malformed
    /// line: that is a receiver bug, not something a test should tolerate.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.try_spans().unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn try_spans(&self) -> Result<Vec<ReceivedSpan>> {
        let text = match fs::read_to_string(&self.out) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.out.display())),
        };
        // Only newline-terminated lines are complete; the receiver writes
        // whole lines, but never trust a reader/writer race to be atomic.
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).with_context(|| {
                    format!(
                        "{} line {}: malformed span record: {l}",
                        self.out.display(),
                        i + 1
                    )
                })
            })
            .collect()
    }

    /// Polls until `pred(all spans so far)` holds and returns those spans.
    /// On timeout (or if the receiver died) the error lists every span seen,
    /// pretty-printed, plus the receiver's log.
    pub fn wait_for<F: Fn(&[ReceivedSpan]) -> bool>(
        &self,
        timeout: Duration,
        pred: F,
    ) -> Result<Vec<ReceivedSpan>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.try_spans()?;
            if pred(&spans) {
                return Ok(spans);
            }
            let dead = !self.is_running();
            if dead || Instant::now() >= deadline {
                let why = if dead {
                    "the receiver exited".to_string()
                } else {
                    format!("timed out after {timeout:?}")
                };
                bail!(
                    "wait_for: {why}; condition not met by the {} span(s) received:\n{}\n--- receiver log ---\n{}",
                    spans.len(),
                    pretty(&spans),
                    self.log()
                );
            }
            std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    /// Waits until at least `n` spans matching `pred` arrived; returns them.
    pub fn wait_for_matching<F: Fn(&ReceivedSpan) -> bool>(
        &self,
        timeout: Duration,
        n: usize,
        pred: F,
    ) -> Result<Vec<ReceivedSpan>> {
        let all = self.wait_for(timeout, |s| s.iter().filter(|x| pred(x)).count() >= n)?;
        Ok(all.into_iter().filter(|x| pred(x)).collect())
    }

    /// Still running?
    pub fn is_running(&self) -> bool {
        matches!(
            self.child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_wait(),
            Ok(None)
        )
    }

    /// SIGTERM and wait; errors if it needed SIGKILL or exited non-zero.
    pub fn stop(self) -> Result<ExitStatus> {
        let (status, killed) = terminate(
            &mut self.child.lock().unwrap_or_else(|e| e.into_inner()),
            STOP_TIMEOUT,
        );
        let status = status.ok_or_else(|| anyhow!("could not reap the otlp receiver"))?;
        if killed || !status.success() {
            bail!(
                "otlp receiver did not exit cleanly on SIGTERM ({status}{}); log:\n{}",
                if killed { ", needed SIGKILL" } else { "" },
                self.log()
            );
        }
        Ok(status)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // No grace period: nothing of the receiver's is needed after the test.
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = child.try_wait() {
            signal_tree(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

fn pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("<unserialisable: {e}>"))
}

/// One line of the receiver's output file: one span, flattened with the
/// resource/scope it came in and the request's transport and headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedSpan {
    /// "grpc" | "http".
    pub transport: String,
    /// "protobuf" | "json" (request body encoding).
    #[serde(default)]
    pub encoding: String,
    /// 1-based index of the export request among all requests the receiver
    /// got, rejected ones included (so > N with `--fail-first N`).
    #[serde(default)]
    pub request_seq: u64,
    /// Request headers / gRPC metadata, lowercased keys.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub resource: BTreeMap<String, Value>,
    #[serde(default)]
    pub resource_schema_url: String,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub scope_schema_url: String,
    /// Lowercase hex, 32 chars.
    pub trace_id: String,
    /// Lowercase hex, 16 chars.
    pub span_id: String,
    /// Lowercase hex, "" for a root span.
    #[serde(default)]
    pub parent_span_id: String,
    #[serde(default)]
    pub trace_state: String,
    #[serde(default)]
    pub flags: u32,
    pub name: String,
    /// "SERVER" | "CLIENT" | "INTERNAL" | "PRODUCER" | "CONSUMER" | "UNSPECIFIED".
    pub kind: String,
    /// Unix nanoseconds.
    pub start: u64,
    pub end: u64,
    pub status: SpanStatus,
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
    #[serde(default)]
    pub events: Vec<SpanEvent>,
    #[serde(default)]
    pub links: Vec<SpanLink>,
    #[serde(default)]
    pub dropped_attributes_count: u32,
    #[serde(default)]
    pub dropped_events_count: u32,
    #[serde(default)]
    pub dropped_links_count: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanStatus {
    /// "UNSET" | "OK" | "ERROR".
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    pub name: String,
    pub time: u64,
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanLink {
    pub trace_id: String,
    pub span_id: String,
    #[serde(default)]
    pub trace_state: String,
    #[serde(default)]
    pub flags: u32,
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }
    /// Only OTLP int values (a string "200" is not an int: catches exporters
    /// that stringify numbers).
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(Value::as_i64)
    }
    pub fn attr_bool(&self, key: &str) -> Option<bool> {
        self.attributes.get(key).and_then(Value::as_bool)
    }
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        self.resource.get(key).and_then(Value::as_str)
    }
    pub fn resource_i64(&self, key: &str) -> Option<i64> {
        self.resource.get(key).and_then(Value::as_i64)
    }
    /// A request header / gRPC metadata value (key matched lowercased).
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .get(&key.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end.saturating_sub(self.start))
    }
    /// Pretty JSON, for assertion messages.
    pub fn pretty(&self) -> String {
        pretty(self)
    }
}
