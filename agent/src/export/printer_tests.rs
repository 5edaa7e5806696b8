use std::io;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::*;
use crate::export::test_util::{resource, span};
use crate::span::model::Attr;

fn text(span: &Span) -> String {
    let mut s = String::new();
    write_text(&mut s, span);
    s
}

fn json(span: &Span) -> Value {
    let mut s = String::new();
    write_json(&mut s, span);
    assert!(!s.contains('\n'));
    serde_json::from_str(&s).unwrap()
}

#[test]
fn text_line_has_every_field() {
    let mut s = span(&resource(1, "checkout"), 5);
    s.parent_span_id = Some([0x33; 8]);
    s.attributes
        .push(Attr::new("network.peer.address", "10.1.2.3"));
    s.attributes.push(Attr::new("network.peer.port", 5432_i64));
    let line = text(&s);
    let time = line.split(' ').next().unwrap();
    let shape: Vec<usize> = time.split([':', '.']).map(str::len).collect();
    assert_eq!(shape, vec![2, 2, 2, 3], "HH:MM:SS.mmm in {line:?}");
    assert!(time.ends_with(".123"), "{line}");
    for want in [
        " checkout SERVER GET /items OK 12.345ms ",
        " trace=abcd0000000000000000000000001105",
        " span=2200000000000005 parent=3333333333333333",
        " status_code=200",
        " peer=10.1.2.3:5432",
    ] {
        assert!(line.contains(want), "{line:?} lacks {want:?}");
    }
}

#[test]
fn text_line_root_error_and_client_peer() {
    let mut s = span(&resource(1, "api"), 1);
    s.kind = SpanKind::Client;
    s.status = SpanStatus::Error {
        message: "connection reset".into(),
    };
    s.attributes = vec![
        Attr::new("server.address", "::1"),
        Attr::new("server.port", 6379_i64),
    ];
    let line = text(&s);
    assert!(
        line.contains(" api CLIENT GET /items ERROR(connection reset) 12.345ms "),
        "{line}"
    );
    assert!(line.contains(" parent=-"), "{line}");
    assert!(line.ends_with(" peer=[::1]:6379"), "{line}");
    assert!(!line.contains("status_code"), "{line}");
}

#[test]
fn text_line_escapes_control_characters() {
    let mut s = span(&resource(1, "evil\x1b[2Jsvc"), 1);
    s.name = "GET /a\r\nfake line".into();
    s.status = SpanStatus::Error {
        message: "bad\x07".into(),
    };
    s.attributes = vec![Attr::new("network.peer.address", "1.2.3.4\n")];
    let line = text(&s);
    assert!(!line.chars().any(char::is_control), "{line:?}");
    assert!(
        line.contains(r"evil\u{1b}[2Jsvc SERVER GET /a\r\nfake line ERROR(bad\u{7})"),
        "{line}"
    );
    assert!(line.ends_with(r" peer=1.2.3.4\n"), "{line}");
}

#[test]
fn json_line_parses_back_with_all_fields() {
    let mut s = span(&resource(7, "checkout"), 9);
    s.parent_span_id = Some([1, 2, 3, 4, 5, 6, 7, 8]);
    s.parent_is_remote = true;
    s.status = SpanStatus::Error {
        message: "boom".into(),
    };
    let v = json(&s);
    assert_eq!(v["trace_id"], "abcd0000000000000000000000001109");
    assert_eq!(v["span_id"], "2200000000000009");
    assert_eq!(v["parent_span_id"], "0102030405060708");
    assert_eq!(v["parent_is_remote"], true);
    assert_eq!(v["kind"], "SERVER");
    assert_eq!(v["name"], "GET /items");
    assert_eq!(v["start_unix_nanos"].as_u64(), Some(s.start_unix_nanos));
    assert_eq!(v["end_unix_nanos"].as_u64(), Some(s.end_unix_nanos));
    assert_eq!(v["duration_ns"], 12_345_678);
    assert_eq!(
        v["status"],
        serde_json::json!({"code": "ERROR", "message": "boom"})
    );
    assert_eq!(v["service_name"], "checkout");
    assert_eq!(
        v["resource"],
        serde_json::json!({"service.name": "checkout", "process.pid": 4242})
    );
    assert_eq!(
        v["attributes"],
        serde_json::json!({"http.request.method": "GET", "http.response.status_code": 200})
    );
    let root = json(&span(&resource(7, "checkout"), 1));
    assert_eq!(root["parent_span_id"], Value::Null);
    assert_eq!(root["status"], serde_json::json!({"code": "UNSET"}));
}

/// Accepts `ok_writes` lines, then fails every write with `kind`.
#[derive(Clone)]
struct Sink {
    lines: Arc<Mutex<Vec<u8>>>,
    ok_writes: Arc<Mutex<usize>>,
    kind: io::ErrorKind,
}

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut left = self.ok_writes.lock().unwrap();
        if *left == 0 {
            return Err(io::Error::from(self.kind));
        }
        *left -= 1;
        self.lines.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn run(kind: io::ErrorKind, ok_writes: usize, spans: u8) -> (String, bool, usize) {
    let sink = Sink {
        lines: Arc::default(),
        ok_writes: Arc::new(Mutex::new(ok_writes)),
        kind,
    };
    let (tx, rx) = mpsc::channel(16);
    let r = resource(1, "svc");
    for i in 0..spans {
        tx.try_send(span(&r, i)).unwrap();
    }
    drop(tx);
    let stopped = AtomicBool::new(false);
    let s = sink.clone();
    print_all(Format::Json, rx, move || s.clone(), &stopped);
    let out = String::from_utf8(sink.lines.lock().unwrap().clone()).unwrap();
    let left = *sink.ok_writes.lock().unwrap();
    (out, stopped.load(Ordering::Relaxed), left)
}

#[test]
fn prints_one_line_per_span() {
    let (out, stopped, _) = run(io::ErrorKind::BrokenPipe, 100, 3);
    assert_eq!(out.lines().count(), 3);
    assert!(
        out.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );
    assert!(!stopped);
}

#[test]
fn broken_pipe_stops_printing_without_panic() {
    let (out, stopped, _) = run(io::ErrorKind::BrokenPipe, 2, 5);
    assert_eq!(out.lines().count(), 2);
    assert!(
        stopped,
        "EPIPE must tell submitters to stop feeding the printer"
    );
}

#[test]
fn other_write_errors_skip_the_span_and_go_on() {
    let (out, stopped, _) = run(io::ErrorKind::Other, 0, 3);
    assert_eq!(out, "");
    assert!(!stopped);
}
