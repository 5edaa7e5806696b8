//! Frame layer: reassembly across chunk boundaries, padding, priority,
//! CONTINUATION rules, frame size limits, ignored frames, detection.

use super::*;

/// Client bytes: preface, SETTINGS, a GET split over HEADERS (padded, with
/// priority) + CONTINUATION, and a POST with a padded DATA frame.
fn client_fixture() -> Vec<u8> {
    let block = Hb::new()
        .idx(2)
        .idx(6)
        .inc_i(4, "/a?q=1", true)
        .inc_i(1, "example.com", true)
        .lit_i(58, "curl/8", false)
        .lit("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", false)
        .0;
    let (f1, f2) = block.split_at(7);
    let mut h1 = vec![3u8, 0x80, 0, 0, 0, 15]; // pad length, priority (exclusive, dep 0, weight 15)
    h1.extend_from_slice(f1);
    h1.extend_from_slice(&[0, 0, 0]);
    let post = Hb::new().idx(3).idx(6).lit_i(4, "/upload", false).idx(62).lit_i(31, "text/plain", false).0;
    let mut padded = vec![5u8];
    padded.extend_from_slice(&[b'd'; 10]);
    padded.extend_from_slice(&[0; 5]);
    [
        PREFACE.to_vec(),
        settings(&[(0x3, 100), (0x4, 65_535)]),
        frame(HEADERS, END_STREAM | PADDED | PRIO, 1, &h1),
        frame(CONTINUATION, END_HEADERS, 1, f2),
        headers(3, 0, &post),
        frame(DATA, PADDED, 3, &padded),
        data(3, END_STREAM, 7),
    ]
    .concat()
}

fn server_fixture() -> Vec<u8> {
    [
        settings(&[(0x3, 250)]),
        settings_ack(),
        headers(3, 0, &Hb::new().lit_i(8, "201", false).0),
        headers(1, 0, &status_block(200, Some("text/html"))),
        data(1, END_STREAM, 100),
        data(3, END_STREAM, 0),
    ]
    .concat()
}

fn check_fixture(w: &Wire, label: &str) {
    assert!(!w.s.is_broken(), "{label}");
    let xs = w.exchanges();
    assert_eq!(xs.len(), 2, "{label}: {:#?}", w.events);
    let (a, b) = (&xs[0], &xs[1]);
    assert_eq!(a.stream_id, 1, "{label}");
    assert_eq!(a.request.method.as_deref(), Some("GET"));
    assert_eq!(a.request.path.as_deref(), Some("/a?q=1"), "{label}");
    assert_eq!(a.request.authority.as_deref(), Some("example.com"));
    assert_eq!(a.request.user_agent.as_deref(), Some("curl/8"));
    assert!(a.request.traceparent.as_deref().is_some_and(|t| t.starts_with("00-0af7")));
    assert!(a.request.complete && !a.partial);
    assert_eq!((a.status, a.response_content_type.as_deref()), (Some(200), Some("text/html")));
    assert_eq!((a.request_body_size, a.response_body_size), (0, 100), "{label}");
    assert_eq!(b.stream_id, 3);
    assert_eq!(b.request.method.as_deref(), Some("POST"));
    assert_eq!(b.request.authority.as_deref(), Some("example.com"), "dynamic entry from stream 1");
    assert_eq!(b.request.content_type.as_deref(), Some("text/plain"));
    assert_eq!((b.status, b.request_body_size, b.response_body_size), (Some(201), 17, 0), "{label}");
    for x in &xs {
        assert_eq!((x.error, x.reset), (None, None), "{label}");
    }
    assert_eq!(w.started_streams().len(), 2);
}

#[test]
fn whole_chunks() {
    let mut w = Wire::new(false);
    w.client(&client_fixture()).server(&server_fixture());
    check_fixture(&w, "whole");
}

#[test]
fn split_at_every_offset() {
    let (c, s) = (client_fixture(), server_fixture());
    let whole = {
        let mut w = Wire::new(false);
        w.client(&c).server(&s);
        w.exchanges().into_iter().map(untimed).collect::<Vec<_>>()
    };
    for k in 0..=c.len() {
        let mut w = Wire::new(false);
        for part in split_at(&c, &[k]) {
            w.client(part);
        }
        w.server(&s);
        check_fixture(&w, &format!("client cut {k}"));
        assert_eq!(w.exchanges().into_iter().map(untimed).collect::<Vec<_>>(), whole);
    }
    for k in 0..=s.len() {
        let mut w = Wire::new(false);
        w.client(&c);
        for part in split_at(&s, &[k]) {
            w.server(part);
        }
        check_fixture(&w, &format!("server cut {k}"));
    }
}

#[test]
fn one_byte_chunks() {
    let mut w = Wire::new(false);
    for b in client_fixture().chunks(1) {
        w.client(b);
    }
    for b in server_fixture().chunks(1) {
        w.server(b);
    }
    check_fixture(&w, "1-byte chunks");
    // The HEADERS of stream 1 starts right after preface (24) + SETTINGS (21).
    assert_eq!(w.exchanges()[0].request_first, ts(46));
}

#[test]
fn continuation_on_another_stream_breaks() {
    let mut w = Wire::started();
    let b = get_block("/x");
    w.client(&[frame(HEADERS, END_STREAM, 1, &b[..3]), frame(CONTINUATION, END_HEADERS, 3, &b[3..])].concat());
    assert!(w.s.is_broken());
    // The stream never started: its block was not complete.
    assert!(w.events.is_empty(), "{:#?}", w.events);
}

#[test]
fn frame_interrupting_a_header_block_breaks_and_reports_open_streams() {
    let mut w = Wire::started();
    w.client(&headers(1, 0, &get_block("/open")));
    let b = get_block("/y");
    w.client(&[frame(HEADERS, 0, 3, &b[..3]), data(1, 0, 4)].concat());
    assert!(w.s.is_broken());
    let x = w.one();
    assert_eq!((x.stream_id, x.error), (1, Some(Http2Error::Protocol)));
    w.client(&headers(5, END_STREAM, &get_block("/z"))).close(false);
    assert_eq!(w.exchanges().len(), 1, "nothing after breaking");
}

#[test]
fn continuation_without_headers_breaks() {
    let mut w = Wire::started();
    w.client(&frame(CONTINUATION, END_HEADERS, 1, &get_block("/x")));
    assert!(w.s.is_broken());
}

#[test]
fn frame_size_follows_settings() {
    let mut w = Wire::started();
    w.client(&headers(1, 0, &get_block("/big")));
    w.client(&data(1, 0, 16_384));
    assert!(!w.s.is_broken());
    w.client(&data(1, 0, 16_385));
    assert!(w.s.is_broken(), "above the default SETTINGS_MAX_FRAME_SIZE");

    let mut w = Wire::started();
    w.server(&settings(&[(0x5, 1 << 20)]));
    w.client(&[headers(1, 0, &get_block("/big")), data(1, END_STREAM, 200_000)].concat());
    w.server(&[headers(1, 0, &status_block(200, None)), data(1, END_STREAM, 16_384)].concat());
    assert!(!w.s.is_broken());
    assert_eq!(w.one().request_body_size, 200_000);
    // The server did not raise the client's limit for itself.
    w.server(&data(1, 0, 16_385));
    assert!(w.s.is_broken());
}

#[test]
fn invalid_settings_value_breaks() {
    let mut w = Wire::started();
    w.server(&settings(&[(0x5, 100)]));
    assert!(w.s.is_broken());
}

#[test]
fn control_and_unknown_frames_are_ignored() {
    let mut w = Wire::started();
    let noise = [
        ping(),
        window_update(0),
        window_update(1),
        frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 7]),
        frame(0xfa, 0xff, 1, b"extension"),
        frame(0x0a, 0, 0, b"\0\0origin"),
    ]
    .concat();
    w.client(&[headers(1, END_STREAM, &get_block("/")), noise.clone()].concat());
    w.server(&[noise.clone(), headers(1, END_STREAM, &status_block(204, None)), noise].concat());
    let x = w.one();
    assert_eq!((x.status, x.error), (Some(204), None));
    assert!(!w.s.is_broken());
}

#[test]
fn bad_padding_breaks() {
    let mut w = Wire::started();
    w.client(&headers(1, 0, &get_block("/")));
    w.client(&frame(DATA, PADDED, 1, &[9, 1, 2]));
    assert!(w.s.is_broken());
    let mut w = Wire::started();
    w.client(&frame(HEADERS, PADDED | END_HEADERS, 1, &[200, 0x82]));
    assert!(w.s.is_broken());
}

#[test]
fn preface_mismatch_breaks() {
    let mut w = Wire::new(false);
    w.client(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(w.s.is_broken());
    let mut w = Wire::new(false);
    w.client(&PREFACE[..10]).client(&PREFACE[10..]).client(&settings(&[]));
    assert!(!w.s.is_broken(), "preface split across chunks");
}

#[test]
fn detection_helpers() {
    assert!(looks_like_preface(PREFACE));
    assert!(looks_like_preface(b"PRI * HT"));
    assert!(looks_like_preface(&client_fixture()));
    assert!(!looks_like_preface(b""));
    assert!(!looks_like_preface(b"GET / HTTP/1.1\r\n"));

    assert!(looks_like_frames(&server_fixture()));
    assert!(looks_like_frames(&[headers(1, 0, &get_block("/")), data(1, END_STREAM, 3)].concat()));
    assert!(looks_like_frames(&data(7, 0, 20)[..12]), "a prefix of one frame");
    assert!(!looks_like_frames(&data(7, 0, 20)[..8]), "too short to tell");
    assert!(!looks_like_frames(&client_fixture()), "the preface is not a frame");
    assert!(!looks_like_frames(b"HTTP/1.1 200 OK\r\n\r\n"));
    assert!(!looks_like_frames(&data(2, 0, 3)), "even stream");
    assert!(!looks_like_frames(&frame(SETTINGS, 0, 1, &[])), "SETTINGS on a stream");
    assert!(!looks_like_frames(&frame(DATA, 0x2, 1, &[])), "undefined flag");
    assert!(!looks_like_frames(&frame(0x0b, 0, 1, &[])), "unknown type");
    assert!(!looks_like_frames(&data(1, 0, 16_385)), "too long");
    assert!(!looks_like_frames(&[data(1, 0, 3), b"garbage!!".to_vec()].concat()), "second header checked");
}
