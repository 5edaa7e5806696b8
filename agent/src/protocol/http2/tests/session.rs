//! Stream lifecycle: timestamps, gRPC, resets, GOAWAY, close, HPACK state
//! across requests, bounds.

use super::super::frame::MAX_BLOCK;
use super::super::session::MAX_STREAMS;
use super::*;

#[test]
fn get_exchange_timestamps() {
    let mut w = Wire::started(); // calls 1..=3
    w.client(&headers(1, END_STREAM, &get_block("/index"))); // 4
    w.server(&headers(1, 0, &status_block(200, Some("text/plain")))); // 5
    w.server(&data(1, 0, 10)); // 6
    w.server(&data(1, END_STREAM, 5)); // 7
    let started = w.started_streams();
    assert_eq!(started.len(), 1);
    assert_eq!((started[0].0, started[0].2), (1, ts(4)));
    assert_eq!(started[0].1.path.as_deref(), Some("/index"));
    assert_eq!(started[0].1.scheme.as_deref(), Some("http"));
    let x = w.one();
    assert_eq!(x.request, started[0].1);
    assert_eq!((x.request_first, x.request_last), (ts(4), ts(4)));
    assert_eq!((x.response_first, x.response_last), (Some(ts(5)), Some(ts(7))));
    assert_eq!((x.status, x.response_body_size, x.error, x.partial), (Some(200), 15, None, false));
    assert!(!x.is_grpc());
    assert_eq!(w.s.open_streams(), 0);
}

#[test]
fn grpc_unary_with_trailers() {
    let mut w = Wire::started();
    w.client(&headers(1, 0, &grpc_block("/pkg.Svc/Get"))); // 4
    w.client(&data(1, END_STREAM, 12)); // 5
    w.server(&headers(1, 0, &status_block(200, Some("application/grpc+proto")))); // 6
    w.server(&data(1, 0, 30)); // 7
    w.server(&headers(1, END_STREAM, &trailers_block(13, Some("bad%20thing %E2%9C%93 %zz")))); // 8
    let x = w.one();
    assert!(x.is_grpc() && x.request.is_grpc());
    assert_eq!(x.request.path.as_deref(), Some("/pkg.Svc/Get"));
    assert_eq!(x.request.grpc_timeout.as_deref(), Some("100m"));
    assert_eq!((x.status, x.grpc_status), (Some(200), Some(13)));
    assert_eq!(x.grpc_message.as_deref(), Some("bad thing ✓ %zz"));
    assert_eq!((x.request_body_size, x.response_body_size), (12, 30));
    assert_eq!((x.request_last, x.response_last), (ts(5), Some(ts(8))));
}

#[test]
fn grpc_trailers_only_response() {
    let mut w = Wire::started();
    w.client(&[headers(1, 0, &grpc_block("/pkg.Svc/Find")), data(1, END_STREAM, 5)].concat());
    let mut b = status_block(200, Some("application/grpc"));
    b.extend(trailers_block(5, Some("not found")));
    w.server(&headers(1, END_STREAM, &b));
    let x = w.one();
    assert_eq!((x.status, x.grpc_status, x.grpc_message.as_deref()), (Some(200), Some(5), Some("not found")));
    assert_eq!(x.response_body_size, 0);
}

#[test]
fn grpc_status_ignored_on_plain_http() {
    let mut w = Wire::started();
    w.client(&headers(1, END_STREAM, &get_block("/")));
    let mut b = status_block(200, Some("text/html"));
    b.extend(trailers_block(2, None));
    w.server(&headers(1, END_STREAM, &b));
    assert_eq!(w.one().grpc_status, None);
}

#[test]
fn grpc_bidi_streaming_ends_when_both_sides_end() {
    let mut w = Wire::started();
    w.client(&headers(1, 0, &grpc_block("/chat.Chat/Talk")));
    w.server(&headers(1, 0, &status_block(200, Some("application/grpc"))));
    for i in 0..20 {
        w.client(&data(1, 0, 10 + i));
        w.server(&data(1, 0, 100 + i));
    }
    w.server(&headers(1, END_STREAM, &trailers_block(0, None)));
    assert!(w.exchanges().is_empty(), "the client has not ended yet");
    w.client(&data(1, END_STREAM, 0));
    let x = w.one();
    assert_eq!((x.grpc_status, x.error), (Some(0), None));
    assert_eq!((x.request_body_size, x.response_body_size), (390, 2190));
}

#[test]
fn interim_response_then_final() {
    let mut w = Wire::started();
    let req = Hb::new().idx(3).idx(6).lit_i(4, "/up", false).lit_i(35, "100-continue", false).0;
    w.client(&headers(1, 0, &req)); // 4
    w.server(&headers(1, 0, &Hb::new().lit_i(8, "100", false).0)); // 5
    w.client(&data(1, END_STREAM, 1000)); // 6
    w.server(&headers(1, END_STREAM, &status_block(204, None))); // 7
    let x = w.one();
    assert_eq!((x.status, x.response_first, x.response_last), (Some(204), Some(ts(5)), Some(ts(7))));
}

#[test]
fn rst_stream_from_either_side() {
    let mut w = Wire::started();
    w.client(&headers(1, 0, &grpc_block("/a.B/C"))); // 4
    w.client(&rst(1, 8)); // 5: CANCEL
    let x = w.one();
    assert_eq!((x.reset, x.error, x.request_last), (Some(8), Some(Http2Error::StreamReset), ts(5)));

    // The server answers in full, then stops the upload with NO_ERROR.
    let mut w = Wire::started();
    w.client(&[headers(1, 0, &get_block("/up")), data(1, 0, 100)].concat());
    w.server(&[headers(1, 0, &status_block(500, None)), data(1, END_STREAM, 3), rst(1, 0)].concat());
    let x = w.one();
    assert_eq!((x.status, x.reset, x.error), (Some(500), Some(0), None));

    // REFUSED_STREAM before any response.
    let mut w = Wire::started();
    w.client(&headers(1, END_STREAM, &get_block("/")));
    w.server(&rst(1, 7));
    let x = w.one();
    assert_eq!((x.status, x.reset, x.error), (None, Some(7), Some(Http2Error::StreamReset)));
}

#[test]
fn goaway_ends_streams_above_last_id() {
    let mut w = Wire::started();
    for id in [1, 3, 5] {
        w.client(&headers(id, END_STREAM, &get_block(&format!("/{id}"))));
    }
    w.server(&goaway(1, 0));
    let xs = w.exchanges();
    assert_eq!(
        xs.iter().map(|x| (x.stream_id, x.error)).collect::<Vec<_>>(),
        [(3, Some(Http2Error::GoAway)), (5, Some(Http2Error::GoAway))]
    );
    w.server(&headers(1, END_STREAM, &status_block(200, None)));
    assert_eq!(w.exchanges().last().map(|x| (x.stream_id, x.error)), Some((1, None)));
    // A client GOAWAY is about pushed streams: no effect.
    w.client(&[headers(7, END_STREAM, &get_block("/7")), goaway(0, 0)].concat());
    assert_eq!(w.s.open_streams(), 1);
}

#[test]
fn close_ends_open_streams() {
    let mut w = Wire::started();
    w.client(&headers(1, END_STREAM, &get_block("/a")));
    w.client(&headers(3, 0, &get_block("/b")));
    w.server(&headers(3, END_STREAM, &status_block(200, None))); // 6: answered, client still open
    w.close(false); // t = 70
    let xs = w.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!((xs[0].stream_id, xs[0].error, xs[0].closed_ns), (1, Some(Http2Error::ConnectionClosed), Some(70)));
    assert_eq!((xs[1].stream_id, xs[1].error, xs[1].status), (3, None, Some(200)));
    assert!(w.close(true).exchanges().len() == 2, "second close is a no-op");

    let mut w = Wire::started();
    w.client(&headers(1, END_STREAM, &get_block("/a"))).close(true);
    assert_eq!(w.one().error, Some(Http2Error::ConnectionReset));
}

#[test]
fn dynamic_table_across_requests_and_size_update() {
    let mut w = Wire::started();
    let first = Hb::new()
        .idx(2)
        .idx(6)
        .inc_i(4, "/api/v1", true)
        .inc_i(1, "svc.local", true)
        .inc("traceparent", "00-11111111111111111111111111111111-2222222222222222-01", true)
        .inc("tracestate", "a=1", false)
        .lit("TraceState", "b=2", false)
        .0;
    w.client(&headers(1, END_STREAM, &first));
    // 62 tracestate, 63 traceparent, 64 :authority, 65 :path.
    let second = Hb::new().size(4096).idx(2).idx(6).idx(65).idx(64).idx(62).0;
    w.client(&headers(3, END_STREAM, &second));
    let st = w.started_streams();
    assert_eq!(st[0].1.tracestate.as_deref(), Some("a=1,b=2"));
    assert_eq!(st[0].1.traceparent.as_deref().map(str::len), Some(55));
    let r = &st[1].1;
    assert!(r.complete);
    assert_eq!((r.path.as_deref(), r.authority.as_deref()), (Some("/api/v1"), Some("svc.local")));
    assert_eq!((r.tracestate.as_deref(), r.traceparent.as_deref()), (Some("a=1"), None));
}

#[test]
fn small_header_table_from_settings_evicts() {
    let mut w = Wire::started();
    w.server(&settings(&[(0x1, 100)])); // the client's encoder may use 100 bytes
    let req = |path: &str| Hb::new().size(100).idx(2).idx(6).inc_i(4, path, false).lit_i(1, "h", false).0;
    // Each :path entry is 5 + 30 + 32 = 67 bytes: only one fits.
    w.client(&headers(1, END_STREAM, &req(&"a".repeat(30))));
    w.client(&headers(3, END_STREAM, &req(&"b".repeat(30))));
    w.client(&headers(5, END_STREAM, &Hb::new().idx(2).idx(6).idx(62).0));
    assert_eq!(w.started_streams()[2].1.path, Some("b".repeat(30)));
    // Index 63 was evicted: a real decoder fails, so the connection breaks.
    w.client(&headers(7, END_STREAM, &Hb::new().idx(2).idx(63).0));
    assert!(w.s.is_broken());
    assert!(w.exchanges().iter().all(|x| x.error == Some(Http2Error::Protocol)));
}

#[test]
fn names_match_case_insensitively_and_host_is_a_fallback() {
    let mut w = Wire::started();
    let b = Hb::new().idx(2).lit("User-Agent", "UA", false).lit("HOST", "h.example", false).lit_i(4, "/", false).0;
    w.client(&headers(1, END_STREAM, &b));
    let r = &w.started_streams()[0].1;
    assert_eq!((r.user_agent.as_deref(), r.authority.as_deref()), (Some("UA"), Some("h.example")));
}

#[test]
fn oversized_header_block_is_partial_and_poisons_hpack() {
    let mut w = Wire::started();
    w.client(&headers(1, END_STREAM, &Hb::new().idx(2).inc("x-keep", "k", false).0));
    let huge = Hb::new().idx(3).inc_i(4, "/huge", false).lit_i(32, &"c".repeat(MAX_BLOCK + 100), false).0;
    let (a, rest) = huge.split_at(16_000);
    let mut frames = frame(HEADERS, 0, 3, a);
    for (i, part) in rest.chunks(16_000).enumerate() {
        let last = (i + 1) * 16_000 >= rest.len();
        frames.extend(frame(CONTINUATION, if last { END_HEADERS } else { 0 }, 3, part));
    }
    w.client(&frames);
    w.client(&data(3, END_STREAM, 1));
    let r = &w.started_streams()[1].1;
    assert!(!r.complete);
    assert_eq!((r.method.as_deref(), r.path.as_deref()), (Some("POST"), Some("/huge")), "the prefix is real");
    // Table state is now unknown: dynamic references decode as unknown.
    w.client(&headers(5, END_STREAM, &Hb::new().idx(2).lit_i(4, "/after", false).idx(63).0));
    let r = &w.started_streams()[2].1;
    assert_eq!((r.path.as_deref(), r.complete), (Some("/after"), false));
    w.client(&headers(7, END_STREAM, &get_block("/static-only")));
    assert!(w.started_streams()[3].1.complete);
    assert!(!w.s.is_broken());
    for id in [3, 5, 7] {
        w.server(&headers(id, END_STREAM, &status_block(200, None)));
    }
    let xs = w.exchanges();
    assert_eq!(
        xs.iter().map(|x| (x.stream_id, x.partial, x.error)).collect::<Vec<_>>(),
        [(3, true, Some(Http2Error::Partial)), (5, true, Some(Http2Error::Partial)), (7, false, None)]
    );
    assert!(w.s.buffered_bytes() <= 2 * MAX_BLOCK);
}

#[test]
fn too_many_streams_evicts_the_oldest() {
    let mut w = Wire::started();
    let n = MAX_STREAMS as u32 + 6;
    for i in 0..n {
        w.client(&headers(2 * i + 1, 0, &get_block("/s")));
    }
    assert_eq!(w.s.evicted_streams(), 6);
    assert_eq!(w.s.open_streams(), MAX_STREAMS);
    let xs = w.exchanges();
    assert_eq!(xs.iter().map(|x| x.stream_id).collect::<Vec<_>>(), [1, 3, 5, 7, 9, 11]);
    assert!(xs.iter().all(|x| x.error == Some(Http2Error::Evicted)));
    // Frames for an evicted stream are ignored; a late HEADERS on it does
    // not restart it.
    w.server(&headers(1, END_STREAM, &status_block(200, None)));
    w.client(&headers(1, END_STREAM, &get_block("/again")));
    assert_eq!(w.exchanges().len(), 6);
}

#[test]
fn push_promise_keeps_hpack_in_step() {
    let mut w = Wire::started();
    w.client(&headers(1, END_STREAM, &get_block("/page")));
    // The server's encoder is shared by PUSH_PROMISE and HEADERS blocks.
    let mut pp = 2u32.to_be_bytes().to_vec();
    pp.extend(Hb::new().idx(2).inc_i(4, "/style.css", false).inc_i(31, "text/css", false).0);
    w.server(&frame(PUSH_PROMISE, END_HEADERS | PADDED, 1, &[&[2u8][..], &pp, &[0, 0]].concat()));
    w.server(&headers(1, 0, &Hb::new().idx(8).idx(62).0));
    w.server(&[headers(2, 0, &Hb::new().idx(8).idx(62).0), data(2, END_STREAM, 9)].concat());
    w.server(&data(1, END_STREAM, 4));
    let x = w.one();
    assert_eq!((x.stream_id, x.response_content_type.as_deref()), (1, Some("text/css")));
    assert_eq!(x.response_body_size, 4);
    assert!(!x.partial && x.error.is_none());
}

#[test]
fn reported_values_are_bounded() {
    let mut w = Wire::started();
    let b = Hb::new()
        .idx(2)
        .lit_i(4, &"p".repeat(9000), true)
        .lit_i(58, &"u".repeat(3000), false)
        .lit_i(31, "Application/GRPC", false)
        .0;
    w.client(&headers(1, END_STREAM, &b));
    let r = &w.started_streams()[0].1;
    assert_eq!(r.path.as_deref().map(str::len), Some(8 * 1024));
    assert_eq!(r.user_agent.as_deref().map(str::len), Some(1024));
    assert!(r.is_grpc(), "content type compared case-insensitively");
}
