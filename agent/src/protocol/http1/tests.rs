//! Session-level tests: byte-exact fixtures fed whole, split at every
//! offset, with gaps, closes, and pseudo-random garbage.

use super::session::{MAX_HEAD_BYTES, MAX_PENDING};
use super::*;

/// Drives a session with increasing timestamps (chunk `n` has enter `10n`,
/// exit `10n + 5`) and records every event.
struct Wire {
    s: Http1Session,
    t: u64,
    events: Vec<Http1Event>,
}

impl Wire {
    fn new() -> Self {
        Self { s: Http1Session::new(), t: 0, events: Vec::new() }
    }

    fn next_ts(&mut self) -> (u64, u64) {
        self.t += 10;
        (self.t, self.t + 5)
    }

    fn req(&mut self, data: &[u8]) -> &mut Self {
        self.req_gap(data, 0)
    }

    fn resp(&mut self, data: &[u8]) -> &mut Self {
        self.resp_gap(data, 0)
    }

    /// Request chunk of which `missing` trailing bytes were not captured.
    fn req_gap(&mut self, data: &[u8], missing: u64) -> &mut Self {
        let (enter_ns, exit_ns) = self.next_ts();
        let c = Chunk { data, size: (data.len() as u64).saturating_add(missing), enter_ns, exit_ns };
        let ev = self.s.on_request_bytes(&c);
        self.events.extend(ev);
        self
    }

    fn resp_gap(&mut self, data: &[u8], missing: u64) -> &mut Self {
        let (enter_ns, exit_ns) = self.next_ts();
        let c = Chunk { data, size: (data.len() as u64).saturating_add(missing), enter_ns, exit_ns };
        let ev = self.s.on_response_bytes(&c);
        self.events.extend(ev);
        self
    }

    fn close(&mut self, reset: bool) -> &mut Self {
        self.t += 10;
        let ev = self.s.on_close(self.t, reset);
        self.events.extend(ev);
        self
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Http1Event::Exchange(x) => Some(x.clone()),
                Http1Event::RequestStarted { .. } => None,
            })
            .collect()
    }

    fn started(&self) -> Vec<(u64, RequestHead, Ts)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Http1Event::RequestStarted { seq, head, first } => Some((*seq, RequestHead::clone(head), *first)),
                Http1Event::Exchange(_) => None,
            })
            .collect()
    }
}

/// Timestamps of chunk number `n` (1-based) as `Wire` assigns them.
fn ts(n: u64) -> Ts {
    Ts { enter_ns: 10 * n, exit_ns: 10 * n + 5 }
}

/// Exchange with timestamps zeroed, to compare runs split differently.
fn untimed(mut x: Exchange) -> Exchange {
    x.request_first = Ts::default();
    x.request_last = Ts::default();
    x.response_first = x.response_first.map(|_| Ts::default());
    x.response_last = x.response_last.map(|_| Ts::default());
    x.closed_ns = x.closed_ns.map(|_| 0);
    x
}

const REQS: &[u8] = b"POST /upload?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world\
GET /next HTTP/1.1\r\nHost: h\r\n\r\n\
PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";

const RESPS: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: z\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";

/// What REQS + RESPS must produce, however they are split.
fn check_fixture(xs: &[Exchange], started: &[(u64, RequestHead, Ts)], label: &str) {
    assert_eq!(xs.len(), 3, "{label}: {xs:#?}");
    assert_eq!(started.len(), 3, "{label}");
    let want = [
        ("POST", "/upload?x=1", 201, Some(11), Some(2)),
        ("GET", "/next", 200, Some(0), Some(19)),
        ("PUT", "/c", 204, Some(5), Some(0)),
    ];
    for (i, (x, (method, target, status, req_body, resp_body))) in xs.iter().zip(want).enumerate() {
        assert_eq!(x.seq, i as u64, "{label}");
        assert_eq!(started[i].0, i as u64, "{label}");
        assert_eq!(started[i].1, *x.request, "{label}");
        assert_eq!(x.request.method, method, "{label}");
        assert_eq!(x.request.target, target, "{label}");
        assert!(x.request.complete, "{label}");
        assert_eq!(x.response.as_ref().map(|r| r.status), Some(status), "{label}");
        assert_eq!(x.request_body_size, req_body, "{label} seq {i}");
        assert_eq!(x.response_body_size, resp_body, "{label} seq {i}");
        assert_eq!(x.error, None, "{label}");
    }
    assert_eq!(xs[0].request.header_bytes, 58, "{label}");
    assert_eq!(xs[0].request.content_length, Some(11), "{label}");
    assert!(xs[2].request.chunked && xs[2].request.expect_continue, "{label}");
}

fn run_split(req_parts: &[&[u8]], resp_parts: &[&[u8]], label: &str) -> Vec<Exchange> {
    let mut w = Wire::new();
    for p in req_parts {
        w.req(p);
    }
    for p in resp_parts {
        w.resp(p);
    }
    assert!(!w.s.is_broken(), "{label}");
    assert_eq!(w.s.in_flight(), 0, "{label}");
    let xs = w.exchanges();
    check_fixture(&xs, &w.started(), label);
    w.close(false);
    assert_eq!(w.exchanges().len(), 3, "{label}: close must add nothing");
    xs.into_iter().map(untimed).collect()
}

#[test]
fn fixture_whole() {
    run_split(&[REQS], &[RESPS], "whole");
}

#[test]
fn fixture_split_at_every_offset() {
    let reference = run_split(&[REQS], &[RESPS], "whole");
    for cut in 0..=REQS.len() {
        let (a, b) = REQS.split_at(cut);
        let got = run_split(&[a, b], &[RESPS], &format!("request cut {cut}"));
        assert_eq!(got, reference, "request cut {cut}");
    }
    for cut in 0..=RESPS.len() {
        let (a, b) = RESPS.split_at(cut);
        let got = run_split(&[REQS], &[a, b], &format!("response cut {cut}"));
        assert_eq!(got, reference, "response cut {cut}");
    }
}

#[test]
fn fixture_byte_by_byte() {
    let req: Vec<&[u8]> = REQS.chunks(1).collect();
    let resp: Vec<&[u8]> = RESPS.chunks(1).collect();
    run_split(&req, &resp, "bytes");
}

#[test]
fn fixture_random_partitions() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let req = rng.partition(REQS);
        let resp = rng.partition(RESPS);
        run_split(&req, &resp, &format!("round {round}"));
    }
}

#[test]
fn interleaved_keep_alive_timings() {
    let mut w = Wire::new();
    w.req(b"POST /a HTTP/1.1\r\nContent-Length: 4\r\n\r\nab") // 1
        .req(b"cd") // 2
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nx") // 3
        .resp(b"yz") // 4
        .req(b"GET /b HTTP/1.1\r\n\r\n") // 5
        .resp(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"); // 6
    let started = w.started();
    assert_eq!(started[0].2, ts(1));
    assert_eq!(started[1].2, ts(5));
    let xs = w.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!((xs[0].request_first, xs[0].request_last), (ts(1), ts(2)));
    assert_eq!((xs[0].response_first, xs[0].response_last), (Some(ts(3)), Some(ts(4))));
    assert_eq!((xs[0].request_body_size, xs[0].response_body_size), (Some(4), Some(3)));
    assert_eq!((xs[1].request_first, xs[1].request_last), (ts(5), ts(5)));
    assert_eq!((xs[1].response_first, xs[1].response_last), (Some(ts(6)), Some(ts(6))));
    assert_eq!(xs[1].response.as_ref().map(|r| r.status), Some(404));
    assert_eq!(xs[1].seq, 1);
}

#[test]
fn request_started_before_response() {
    let mut w = Wire::new();
    w.req(b"GET /slow HTTP/1.1\r\nHost: a\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n");
    assert_eq!(w.events.len(), 1);
    let (seq, head, first) = &w.started()[0];
    assert_eq!((*seq, *first), (0, ts(1)));
    assert_eq!(head.traceparent.as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    assert_eq!(w.s.in_flight(), 1);
}

#[test]
fn pipelined_pairing_is_fifo() {
    let mut w = Wire::new();
    w.req(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nHEAD /c HTTP/1.1\r\n\r\n");
    assert_eq!(w.started().len(), 3);
    w.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 404 NF\r\nContent-Length: 2\r\n\r\nBB");
    w.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"); // HEAD: no body follows
    let xs = w.exchanges();
    let got: Vec<_> = xs
        .iter()
        .map(|x| (x.seq, x.request.target.as_str(), x.response.as_ref().map(|r| r.status), x.response_body_size))
        .collect();
    assert_eq!(got, [(0, "/a", Some(200), Some(1)), (1, "/b", Some(404), Some(2)), (2, "/c", Some(200), Some(0))]);
    // The HEAD response's Content-Length did not swallow the next response.
    w.req(b"GET /d HTTP/1.1\r\n\r\n").resp(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(w.exchanges().len(), 4);
    assert_eq!(w.exchanges()[3].response.as_ref().map(|r| r.status), Some(204));
}

#[test]
fn no_body_statuses() {
    for (status, extra) in [(204, ""), (304, "Content-Length: 50\r\n")] {
        let mut w = Wire::new();
        let resp = format!("HTTP/1.1 {status} X\r\n{extra}\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        w.req(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n").resp(resp.as_bytes());
        let xs = w.exchanges();
        assert_eq!(xs.len(), 2, "{status}");
        assert_eq!(xs[0].response.as_ref().map(|r| r.status), Some(status));
        assert_eq!(xs[0].response_body_size, Some(0));
        assert_eq!(xs[1].response.as_ref().map(|r| r.status), Some(200));
    }
}

#[test]
fn continue_then_final() {
    let mut w = Wire::new();
    w.req(b"PUT /x HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n") // 1
        .resp(b"HTTP/1.1 100 Continue\r\n\r\n") // 2
        .req(b"abc") // 3
        .resp(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"); // 4
    assert!(w.exchanges().is_empty(), "interim responses do not complete");
    w.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); // 5
    let xs = w.exchanges();
    assert_eq!(xs.len(), 1);
    let x = &xs[0];
    assert_eq!(x.response.as_ref().map(|r| r.status), Some(200));
    assert_eq!((x.request_last, x.request_body_size), (ts(3), Some(3)));
    assert_eq!((x.response_first, x.response_last), (Some(ts(2)), Some(ts(5))));
}

#[test]
fn expect_continue_refused_body_never_sent() {
    let mut w = Wire::new();
    w.req(b"POST /big HTTP/1.1\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
        .resp(b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n")
        .req(b"GET /after HTTP/1.1\r\n\r\n")
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let xs = w.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!(xs[0].response.as_ref().map(|r| r.status), Some(417));
    assert_eq!(xs[0].request_body_size, None);
    assert_eq!(xs[1].request.target, "/after");
    assert_eq!(xs[1].error, None);
}

#[test]
fn response_before_request_body_finished() {
    let mut w = Wire::new();
    w.req(b"POST /up HTTP/1.1\r\nContent-Length: 10\r\n\r\n") // 1
        .req(b"abc") // 2
        .resp(b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n") // 3
        .req(b"defghij"); // 4: rest of the body, skipped quietly
    let xs = w.exchanges();
    assert_eq!(xs.len(), 1);
    assert_eq!(xs[0].response.as_ref().map(|r| r.status), Some(413));
    assert_eq!((xs[0].request_last, xs[0].request_body_size), (ts(2), None));
    assert_eq!(xs[0].error, None);
    assert_eq!(w.close(false).exchanges().len(), 1);
    assert_eq!(w.started().len(), 1);
}

#[test]
fn switching_protocols_completes_then_stops() {
    let mut w = Wire::new();
    w.req(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        .resp(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello");
    let xs = w.exchanges();
    assert_eq!(xs.len(), 1);
    assert_eq!(xs[0].response.as_ref().map(|r| r.status), Some(101));
    assert_eq!(xs[0].error, None);
    assert!(w.s.is_broken());
    w.req(b"GET / HTTP/1.1\r\n\r\n").resp(b"\x81\x01x");
    assert_eq!(w.events.len(), 2, "nothing after the switch");
}

#[test]
fn connect_tunnel_stops_parsing() {
    let mut w = Wire::new();
    w.req(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .resp(b"HTTP/1.1 200 Connection Established\r\n\r\n");
    assert_eq!(w.exchanges().len(), 1);
    assert_eq!(w.exchanges()[0].request.target, "example.com:443");
    assert!(w.s.is_broken());
}

#[test]
fn read_until_close() {
    for reset in [false, true] {
        let mut w = Wire::new();
        w.req(b"GET / HTTP/1.0\r\n\r\n") // 1
            .resp(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nsome") // 2
            .resp_gap(b" body", 10); // 3
        assert!(w.exchanges().is_empty());
        w.close(reset);
        let xs = w.exchanges();
        assert_eq!(xs.len(), 1);
        let x = &xs[0];
        assert!(x.request.connection_close);
        assert!(x.response.as_ref().is_some_and(|r| r.connection_close && r.version_minor == 0));
        assert_eq!(x.response_body_size, Some(19));
        assert_eq!(x.response_last, Some(ts(3)));
        assert_eq!(x.closed_ns, Some(40));
        assert_eq!(x.error, reset.then_some(ExchangeError::ConnectionReset));
    }
}

#[test]
fn close_with_requests_waiting() {
    let mut w = Wire::new();
    w.req(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234");
    w.close(true);
    let xs = w.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!(xs[0].response.as_ref().map(|r| r.status), Some(200));
    assert_eq!(xs[0].response_body_size, None);
    assert_eq!(xs[0].error, Some(ExchangeError::ConnectionReset));
    assert_eq!((xs[1].seq, xs[1].response.is_none()), (1, true));
    assert_eq!(xs[1].response_first, None);
    assert_eq!(xs[1].error, Some(ExchangeError::ConnectionReset));
    assert_eq!(xs[1].closed_ns, Some(30));
    assert!(w.close(false).exchanges().len() == 2, "second close is a no-op");
    assert!(w.req(b"GET / HTTP/1.1\r\n\r\n").events.len() == 4, "closed session ignores bytes");
}

#[test]
fn close_during_response_head() {
    let mut w = Wire::new();
    w.req(b"GET / HTTP/1.1\r\n\r\n").resp(b"HTTP/1.1 502 Bad Gateway\r\nServer: x\r\nConte");
    w.close(false);
    let xs = w.exchanges();
    assert_eq!(xs.len(), 1);
    let r = xs[0].response.as_ref().expect("status line was seen");
    assert_eq!((r.status, r.complete), (502, false));
    assert_eq!(xs[0].response_first, Some(ts(2)));
    assert_eq!(xs[0].error, Some(ExchangeError::ConnectionClosed));
}

#[test]
fn connection_close_response() {
    let mut w = Wire::new();
    w.req(b"GET / HTTP/1.1\r\n\r\n").resp(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi");
    let xs = w.exchanges();
    assert_eq!(xs.len(), 1);
    assert!(xs[0].response.as_ref().is_some_and(|r| r.connection_close));
    assert!(w.close(false).exchanges().len() == 1);
}

#[test]
fn orphan_response_is_skipped() {
    let mut w = Wire::new();
    w.resp(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 5\r\n\r\nbye..");
    assert!(w.events.is_empty());
    assert!(!w.s.is_broken());
    w.req(b"GET / HTTP/1.1\r\n\r\n").resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(w.exchanges().len(), 1);
    assert_eq!(w.exchanges()[0].error, None);
}

#[test]
fn response_received_before_request_sent_is_orphan() {
    let mut s = Http1Session::new();
    let c = |data, t| Chunk { data, size: 0, enter_ns: t, exit_ns: t };
    let mut ev = s.on_request_bytes(&Chunk { size: 19, ..c(b"GET / HTTP/1.1\r\n\r\n", 100) });
    ev.extend(s.on_response_bytes(&Chunk { size: 38, ..c(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 50) }));
    assert_eq!(ev.len(), 1, "only RequestStarted: {ev:?}");
    assert_eq!(s.in_flight(), 1);
}

#[test]
fn leading_blank_lines_between_messages() {
    let mut w = Wire::new();
    w.req(b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\n") // 1
        .req(b"\r\n") // 2
        .req(b"GET /2 HTTP/1.1\r\n\r\n") // 3
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(w.exchanges().len(), 2);
    assert_eq!(w.started()[1].2, ts(3));
}

#[test]
fn many_headers_still_parse() {
    let mut raw = b"GET /many HTTP/1.1\r\n".to_vec();
    for i in 0..150 {
        raw.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"Content-Length: 2\r\n\r\nokGET /z HTTP/1.1\r\n\r\n");
    let mut w = Wire::new();
    w.req(&raw);
    let started = w.started();
    assert_eq!(started.len(), 2);
    assert!(started[0].1.complete);
    assert_eq!(started[1].1.target, "/z");
}

#[test]
fn gap_inside_known_length_body_keeps_sync() {
    let mut w = Wire::new();
    w.req(b"POST /up HTTP/1.1\r\nContent-Length: 100000\r\n\r\n") // 1
        .req_gap(b"abcd", 99_990) // 2
        .req(b"123456GET /next HTTP/1.1\r\n\r\n") // 3
        .resp_gap(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nxx", 4998) // 4
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); // 5
    let xs = w.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!((xs[0].request_body_size, xs[0].request_last), (Some(100_000), ts(3)));
    assert_eq!((xs[0].response_body_size, xs[0].response_last), (Some(5000), Some(ts(4))));
    assert_eq!(xs[0].error, None);
    assert_eq!((xs[1].request.target.as_str(), xs[1].error), ("/next", None));
}

#[test]
fn gap_in_chunked_data_is_counted() {
    let mut w = Wire::new();
    w.req(b"GET / HTTP/1.1\r\n\r\n")
        .resp_gap(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\nab", 1022)
        .resp(b"\r\n0\r\n\r\n");
    let xs = w.exchanges();
    assert_eq!(xs.len(), 1);
    assert_eq!((xs[0].response_body_size, xs[0].error), (Some(1024), None));
}

#[test]
fn gap_cutting_request_head() {
    let mut w = Wire::new();
    w.req_gap(b"GET /cut HTTP/1.1\r\nHost: example.com\r\nCookie: sec", 5000) // 1
        .req(b"ret-rest-of-head\r\n\r\n") // 2: continuation, dropped
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") // 3
        .req(b"GET /next HTTP/1.1\r\n\r\n") // 4
        .resp(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"); // 5
    let started = w.started();
    assert_eq!(started.len(), 2);
    let cut = &started[0].1;
    assert!(!cut.complete);
    assert_eq!((&*cut.method, cut.target.as_str()), ("GET", "/cut"));
    assert_eq!(cut.host.as_deref(), Some("example.com"));
    assert_eq!(cut.header_bytes, 49);
    let xs = w.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!(xs[0].error, Some(ExchangeError::Truncated));
    assert_eq!(xs[0].response.as_ref().map(|r| r.status), Some(200));
    assert_eq!(xs[0].request_body_size, None);
    assert_eq!((xs[1].request.target.as_str(), xs[1].error), ("/next", None));
    assert_eq!(xs[1].response.as_ref().map(|r| r.status), Some(201));
}

#[test]
fn gap_cutting_request_line_invents_nothing() {
    let mut w = Wire::new();
    w.req_gap(b"GET /very/long/pa", 3000).resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(w.events.is_empty());
    assert!(!w.s.is_broken());
    w.req(b"GET /ok HTTP/1.1\r\n\r\n").resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(w.exchanges().len(), 1);
    assert_eq!(w.exchanges()[0].request.target, "/ok");
}

#[test]
fn gap_cutting_response_head() {
    let mut w = Wire::new();
    w.req(b"GET / HTTP/1.1\r\n\r\n") // 1
        .resp_gap(b"HTTP/1.1 500 Internal Server Error\r\nContent-Le", 9000) // 2
        .resp(b"body bytes continuing") // 3: dropped while resyncing
        .req(b"GET /2 HTTP/1.1\r\n\r\n") // 4
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); // 5
    let xs = w.exchanges();
    assert_eq!(xs.len(), 2);
    let r = xs[0].response.as_ref().expect("status line seen");
    assert_eq!((r.status, r.complete, r.content_length), (500, false, None));
    assert_eq!(xs[0].error, Some(ExchangeError::Truncated));
    assert_eq!(xs[0].response_body_size, None);
    assert_eq!(xs[0].response_last, Some(ts(2)));
    assert_eq!((xs[1].request.target.as_str(), xs[1].error), ("/2", None));
}

#[test]
fn gap_at_response_start_ends_exchange_without_response() {
    let mut w = Wire::new();
    w.req(b"GET / HTTP/1.1\r\n\r\n").resp_gap(b"", 4096).resp(b"tail of that response");
    let xs = w.exchanges();
    assert_eq!(xs.len(), 1);
    assert_eq!((xs[0].response.is_none(), xs[0].error), (true, Some(ExchangeError::Truncated)));
    assert_eq!(xs[0].response_first, Some(ts(2)));
}

#[test]
fn gap_over_chunk_framing_truncates() {
    let mut w = Wire::new();
    w.req(b"GET / HTTP/1.1\r\n\r\n")
        .resp_gap(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab", 50)
        .resp(b"more stuff")
        .req(b"GET /2 HTTP/1.1\r\n\r\n")
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let xs = w.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!((xs[0].response_body_size, xs[0].error), (None, Some(ExchangeError::Truncated)));
    assert_eq!(xs[0].response.as_ref().map(|r| r.complete), Some(true));
    assert_eq!(xs[1].error, None);
}

#[test]
fn gap_spilling_past_body_resyncs() {
    let mut w = Wire::new();
    // The body ends inside the gap, and the next head starts there too.
    w.req_gap(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234", 30) // 1
        .req(b"ER /b HTTP/1.1\r\n\r\n") // 2: rest of a lost head, dropped
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") // 3
        .req(b"GET /c HTTP/1.1\r\n\r\n") // 4
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); // 5
    let xs = w.exchanges();
    let targets: Vec<_> = xs.iter().map(|x| (x.request.target.as_str(), x.error)).collect();
    assert_eq!(targets, [("/a", None), ("/c", None)]);
    assert_eq!(xs[0].request_body_size, Some(10));
}

#[test]
fn pipelined_requests_after_resync_are_flagged() {
    let mut w = Wire::new();
    w.req_gap(b"GET /1 HTTP/1.1\r\nHost: a\r\n", 100) // head cut: resync
        .req(b"GET /3 HTTP/1.1\r\n\r\n") // a request may have been lost in between
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let errs: Vec<_> = w.exchanges().iter().map(|x| x.error).collect();
    assert_eq!(errs, [Some(ExchangeError::Truncated), Some(ExchangeError::Desync)]);
}

#[test]
fn response_resync_flags_waiting_pipelined_requests() {
    let mut w = Wire::new();
    w.req(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
        .resp_gap(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5", 10)
        .resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let errs: Vec<_> = w.exchanges().iter().map(|x| x.error).collect();
    assert_eq!(errs, [Some(ExchangeError::Truncated), Some(ExchangeError::Desync)]);
}

#[test]
fn resync_false_start_keeps_waiting_request() {
    let mut w = Wire::new();
    w.req(b"GET /1 HTTP/1.1\r\n\r\n")
        .resp_gap(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5", 10) // framing lost
        .req(b"GET /2 HTTP/1.1\r\n\r\n")
        .resp(b"H") // looks like a response start while resyncing...
        .resp(b"ello, body bytes") // ...but is body
        .resp(b"H")
        .resp(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let xs = w.exchanges();
    assert_eq!(xs.len(), 2, "{xs:#?}");
    assert_eq!(xs[1].request.target, "/2");
    assert_eq!(xs[1].response.as_ref().map(|r| r.status), Some(404));
    assert_eq!(xs[1].error, None);
}

#[test]
fn junk_head_then_valid_request() {
    let mut w = Wire::new();
    w.req(b"GET / HTTP/1.1\r\n\r\n").resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    w.req(b"GE").req(b"T /\x01\x02 junk").req(b"GET /ok HTTP/1.1\r\n\r\n");
    let targets: Vec<_> = w.started().into_iter().map(|s| s.1.target).collect();
    assert_eq!(targets, ["/", "/ok"]);
    assert!(!w.s.is_broken());
}

#[test]
fn oversized_head_degrades() {
    let mut raw = b"GET /big HTTP/1.1\r\nHost: h\r\n".to_vec();
    while raw.len() < MAX_HEAD_BYTES + 1000 {
        raw.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    let mut w = Wire::new();
    for piece in raw.chunks(1000) {
        w.req(piece);
        assert!(w.s.buffered_bytes() <= 2 * MAX_HEAD_BYTES);
    }
    let started = w.started();
    assert_eq!(started.len(), 1);
    assert!(!started[0].1.complete);
    assert_eq!(started[0].1.host.as_deref(), Some("h"));
    assert!(!w.s.is_broken());
    w.req(b"GET /after HTTP/1.1\r\n\r\n");
    assert_eq!(w.started().len(), 2);
    assert_eq!(w.s.buffered_bytes(), 0, "big buffers are released");
}

#[test]
fn absurd_content_length() {
    for cl in ["9223372036854775808", "18446744073709551616", "99999999999999999999999999", "12abc", "-5"] {
        let raw = format!("POST / HTTP/1.1\r\nContent-Length: {cl}\r\n\r\nxyz");
        let mut w = Wire::new();
        w.req(raw.as_bytes());
        assert!(w.events.is_empty(), "{cl}");
        assert!(w.s.is_broken(), "{cl}: first message invalid");
        // After a valid message the same garbage only resyncs.
        let mut w = Wire::new();
        w.req(b"GET / HTTP/1.1\r\n\r\n").req(raw.as_bytes()).req(b"GET /ok HTTP/1.1\r\n\r\n");
        assert!(!w.s.is_broken(), "{cl}");
        let targets: Vec<_> = w.started().into_iter().map(|s| s.1.target).collect();
        assert_eq!(targets, ["/", "/ok"], "{cl}");
    }
    // The largest accepted length never overflows, gaps included.
    let mut w = Wire::new();
    w.req(b"POST / HTTP/1.1\r\nContent-Length: 9223372036854775807\r\n\r\n")
        .req_gap(b"", u64::MAX)
        .req_gap(b"x", u64::MAX);
    assert_eq!(w.started().len(), 1);
}

#[test]
fn garbage_is_not_http() {
    let inputs: [&[u8]; 5] = [
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"*3\r\n$3\r\nSET\r\n",
        b"\0\0\0\0\0\0",
    ];
    for g in inputs {
        let mut w = Wire::new();
        w.req(g);
        assert!(w.s.is_broken(), "{g:?}");
        w.req(b"GET / HTTP/1.1\r\n\r\n");
        assert!(w.events.is_empty(), "{g:?}");
        let mut w = Wire::new();
        w.resp(g);
        assert!(w.s.is_broken(), "{g:?}");
    }
}

#[test]
fn detection() {
    for yes in
        [&b"GET /"[..], b"POST /x HTTP/1.1", b"DELETE ", b"OPTIONS * HTTP/1.1", b"PATCH", b"G", b"CONN", b"TRACE /"]
    {
        assert!(looks_like_request(yes), "{yes:?}");
    }
    for no in [&b""[..], b"GETX /", b"get /", b"HTTP/1.1 200", b"\x16\x03", b"PRI * HTTP/2.0", b"POST/"] {
        assert!(!looks_like_request(no), "{no:?}");
    }
    for yes in [&b"HTTP/1.1 200 OK"[..], b"HTTP/1.0 404", b"HTTP/1.", b"H"] {
        assert!(looks_like_response(yes), "{yes:?}");
    }
    for no in [&b""[..], b"HTTP/2 200", b"HTTP/1.2 200", b"http/1.1 200", b"GET / HTTP/1.1"] {
        assert!(!looks_like_response(no), "{no:?}");
    }
}

#[test]
fn pending_is_bounded() {
    let mut w = Wire::new();
    for i in 0..(MAX_PENDING + 5) {
        w.req(format!("GET /{i} HTTP/1.1\r\n\r\n").as_bytes());
        assert!(w.s.in_flight() <= MAX_PENDING);
    }
    let xs = w.exchanges();
    assert_eq!(xs.len(), 5);
    assert!(xs.iter().all(|x| x.error == Some(ExchangeError::Desync) && x.response.is_none()));
    assert_eq!(xs[0].seq, 0);
}

/// Deterministic xorshift64 so the fuzz-ish tests need no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Splits `data` into random non-empty pieces.
    fn partition<'a>(&mut self, mut data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = 1 + self.below(data.len() as u64) as usize;
            let (a, b) = data.split_at(n.min(data.len()));
            out.push(a);
            data = b;
        }
        out
    }
}

/// Feeds the two directions interleaved, in random pieces with random
/// gaps, checking the invariants that must hold for any input.
fn fuzz_feed(rng: &mut XorShift, requests: &[u8], responses: &[u8]) {
    let mut s = Http1Session::new();
    let mut t = 0;
    let mut last_seq = None;
    let mut streams = [requests, responses];
    while streams.iter().any(|d| !d.is_empty()) {
        let dir = rng.below(2) as usize;
        let data = streams[dir];
        if data.is_empty() {
            continue;
        }
        let n = (1 + rng.below(600) as usize).min(data.len());
        let (piece, rest) = data.split_at(n);
        streams[dir] = rest;
        // Capture only a prefix sometimes: the rest becomes a gap.
        let kept = if rng.below(8) == 0 { rng.below(n as u64 + 1) as usize } else { n };
        let size = if rng.below(50) == 0 { u64::MAX } else { n as u64 };
        t += 1 + rng.below(3);
        let c = Chunk { data: &piece[..kept], size, enter_ns: t, exit_ns: t + 1 };
        let ev = if dir == 0 { s.on_request_bytes(&c) } else { s.on_response_bytes(&c) };
        for e in ev {
            if let Http1Event::Exchange(x) = e {
                assert!(last_seq.is_none_or(|l| x.seq > l), "seq order");
                last_seq = Some(x.seq);
            }
        }
        assert!(s.buffered_bytes() <= 2 * MAX_HEAD_BYTES);
        assert!(s.in_flight() <= MAX_PENDING);
    }
    s.on_close(t + 1, rng.below(2) == 0);
    assert_eq!(s.in_flight(), 0);
}

fn random_bytes(rng: &mut XorShift, max_len: u64) -> Vec<u8> {
    let len = rng.below(max_len) as usize;
    (0..len).map(|_| rng.next() as u8).collect()
}

/// A copy of `base` repeated a few times, with a few bytes overwritten by
/// framing-relevant characters or noise.
fn mutate(rng: &mut XorShift, base: &[u8]) -> Vec<u8> {
    let mut stream = base.repeat(1 + rng.below(4) as usize);
    for _ in 0..rng.below(8) {
        let i = rng.below(stream.len() as u64) as usize;
        stream[i] = match rng.below(4) {
            0 => b'\r',
            1 => b'\n',
            2 => b"0123456789abcdef"[rng.below(16) as usize],
            _ => rng.next() as u8,
        };
    }
    stream
}

#[test]
fn fuzz_random_bytes() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..300 {
        let a = random_bytes(&mut rng, 20_000);
        let b = random_bytes(&mut rng, 20_000);
        fuzz_feed(&mut rng, &a, &b);
        // Valid start, garbage after: exercises resync rather than "broken".
        let a = [REQS, &a].concat();
        let b = [RESPS, &b].concat();
        fuzz_feed(&mut rng, &a, &b);
    }
}

#[test]
fn fuzz_mutated_http() {
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    for _ in 0..3000 {
        let a = mutate(&mut rng, REQS);
        let b = mutate(&mut rng, RESPS);
        fuzz_feed(&mut rng, &a, &b);
    }
}

#[test]
fn fuzz_long_lines_stay_bounded() {
    let mut rng = XorShift(7);
    let mut stream = b"GET /".to_vec();
    stream.extend(std::iter::repeat_n(b'a', 3 * MAX_HEAD_BYTES));
    fuzz_feed(&mut rng, &stream, &stream);
    let mut s = Http1Session::new();
    let c = Chunk { data: &stream, size: stream.len() as u64, enter_ns: 1, exit_ns: 2 };
    assert!(s.on_request_bytes(&c).is_empty());
    assert!(s.is_broken(), "no request line within the bound");
}

/// Long run for local soak testing:
/// `cargo test --release -- --ignored fuzz_soak`.
#[test]
#[ignore]
fn fuzz_soak() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for i in 0..400_000u64 {
        let (a, b) = if i % 3 == 0 {
            (random_bytes(&mut rng, 3000), random_bytes(&mut rng, 3000))
        } else {
            (mutate(&mut rng, REQS), mutate(&mut rng, RESPS))
        };
        fuzz_feed(&mut rng, &a, &b);
    }
}
