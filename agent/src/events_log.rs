//! `--events-log`: every kernel record as a JSON line, for debugging and for
//! the integration tests that check capture byte for byte.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
};

use anyhow::Context as _;
use serde_json::json;

use crate::{
    capture::decode::{ConnRecord, Event, ProcRecord},
    conntrack::Connection,
};

pub struct EventsLog {
    out: BufWriter<File>,
    failed: bool,
}

impl EventsLog {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("--events-log {}", path.display()))?;
        Ok(Self { out: BufWriter::new(file), failed: false })
    }

    /// `resolved`: the connection as the table settled it (role and
    /// addresses may come from procfs), for open records.
    pub fn write(&mut self, event: &Event, resolved: Option<&Connection>) {
        if self.failed {
            return;
        }
        let line = match event {
            Event::Data(d) => json!({
                "type": "data", "pid": d.tgid, "tid": d.tid, "fd": d.fd, "conn_id": d.conn_id,
                "direction": format!("{:?}", d.direction).to_lowercase(), "call": format!("{:?}", d.call).to_lowercase(),
                "source": format!("{:?}", d.source).to_lowercase(),
                "enter_ns": d.enter_ns, "exit_ns": d.exit_ns, "size": d.size, "truncated": d.truncated,
                "payload_hex": hex(d.payload),
            }),
            Event::ConnOpen(c) => {
                let mut v = conn_json("open", c);
                if let Some(conn) = resolved {
                    v["resolved"] = json!({
                        "role": format!("{:?}", conn.role).to_lowercase(),
                        "local": conn.local.map(|a| a.to_string()),
                        "remote": conn.remote.map(|a| a.to_string()),
                        "mid_stream": conn.mid_stream,
                    });
                }
                v
            }
            Event::ConnClose(c) => conn_json("close", c),
            Event::Proc(ProcRecord::Exec { tgid, ts_ns }) => json!({"type": "exec", "pid": tgid, "ts_ns": ts_ns}),
            Event::Proc(ProcRecord::Exit { tgid, ts_ns }) => json!({"type": "exit", "pid": tgid, "ts_ns": ts_ns}),
            Event::Proc(ProcRecord::Fork { tgid, tid, child, ts_ns }) => {
                json!({"type": "fork", "pid": tgid, "tid": tid, "child": child, "ts_ns": ts_ns})
            }
            Event::Injected(i) => json!({
                "type": "injected", "pid": i.tgid, "tid": i.tid,
                "local": i.local.map(|a| a.to_string()), "remote": i.remote.map(|a| a.to_string()),
                "trace_id": hex(&i.trace_id), "span_id": hex(&i.span_id),
            }),
            Event::ThreadCtx { tgid, tid, conn_id, trace_id, update } => {
                json!({"type": "thread_ctx", "pid": tgid, "tid": tid, "conn_id": conn_id, "trace_id": hex(trace_id), "update": update})
            }
        };
        // Flushed per line: the file is read while kspan runs.
        let result = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
        if let Err(err) = result {
            tracing::warn!(%err, "events log write failed; no more events will be logged");
            self.failed = true;
        }
    }
}

fn conn_json(kind: &str, c: &ConnRecord) -> serde_json::Value {
    json!({
        "type": kind, "pid": c.tgid, "tid": c.tid, "fd": c.fd, "conn_id": c.conn_id,
        "role": format!("{:?}", c.role).to_lowercase(), "call": format!("{:?}", c.call).to_lowercase(),
        "ts_ns": c.ts_ns, "inode": c.inode, "netns": c.netns,
        "local": c.local.map(|a| a.to_string()), "remote": c.remote.map(|a| a.to_string()),
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
