//! Joining a connection mid-stream, and capture gaps.

use super::*;

/// A gRPC request whose `:authority` is a dynamic entry kspan never saw.
fn joined_grpc_request() -> Vec<u8> {
    Hb::new().idx(3).idx(7).lit_i(4, "/pkg.Svc/Do", true).idx(70).lit_i(31, "application/grpc", false).0
}

#[test]
fn join_at_a_frame_boundary_reports_partial_headers() {
    let mut w = Wire::new(true);
    w.client(&[headers(41, 0, &joined_grpc_request()), data(41, END_STREAM, 8)].concat());
    let st = w.started_streams();
    assert_eq!(st.len(), 1);
    let r = &st[0].1;
    assert!(!r.complete);
    assert_eq!((r.method.as_deref(), r.scheme.as_deref()), (Some("POST"), Some("https")));
    assert_eq!((r.path.as_deref(), r.authority.as_deref()), (Some("/pkg.Svc/Do"), None), "never guessed");
    let resp = Hb::new().idx(8).idx(75).0; // content-type unknown to kspan
    w.server(&[headers(41, 0, &resp), data(41, 0, 20), headers(41, END_STREAM, &trailers_block(0, None))].concat());
    let x = w.one();
    assert!(x.partial);
    assert_eq!((x.status, x.error), (Some(200), Some(Http2Error::Partial)));
    assert_eq!((x.request_body_size, x.response_body_size), (8, 20));
    // gRPC is known from the request's content type, so the status counts.
    assert_eq!(x.grpc_status, Some(0));
}

#[test]
fn join_resyncs_at_the_first_plausible_chunk() {
    let mut w = Wire::new(true);
    w.client(&[b'x'; 300]); // the middle of a DATA payload
    let tail = [vec![b'y'; 5], headers(3, END_STREAM, &get_block("/lost"))].concat();
    w.client(&tail); // ends one frame, starts another: cannot be trusted
    w.server(&[vec![0u8; 3], data(1, END_STREAM, 4)].concat());
    assert!(w.events.is_empty());
    w.client(&headers(5, END_STREAM, &get_block("/found")));
    w.server(&headers(5, END_STREAM, &status_block(404, None)));
    let x = w.one();
    assert_eq!((x.stream_id, x.request.path.as_deref(), x.status), (5, Some("/found"), Some(404)));
    assert_eq!((x.error, x.partial), (None, false), "static and literal fields only");
    assert!(!w.s.is_broken());
}

#[test]
fn entries_inserted_after_joining_decode_later_requests() {
    let mut w = Wire::new(true);
    let a = Hb::new().idx(2).idx(6).inc_i(1, "svc.internal", true).lit_i(4, "/a", false).idx(65).0;
    w.client(&headers(101, END_STREAM, &a));
    // 62 is the entry just inserted; 63 predates the join.
    let b = Hb::new().idx(2).idx(6).idx(62).lit_i(4, "/b", false).idx(63).0;
    w.client(&headers(103, END_STREAM, &b));
    let c = Hb::new().idx(2).idx(6).idx(62).lit_i(4, "/c", false).inc("x-new", "1", false).0;
    w.client(&headers(105, END_STREAM, &c));
    // After one more insertion the authority moved to 63.
    let d = Hb::new().idx(2).idx(63).idx(62).lit_i(4, "/d", false).0;
    w.client(&headers(107, END_STREAM, &d));
    let st = w.started_streams();
    let got: Vec<_> = st.iter().map(|(_, r, _)| (r.path.clone(), r.authority.clone(), r.complete)).collect();
    let svc = Some("svc.internal".to_string());
    assert_eq!(
        got,
        [
            (Some("/a".into()), svc.clone(), false),
            (Some("/b".into()), svc.clone(), false),
            (Some("/c".into()), svc.clone(), true),
            (Some("/d".into()), svc, true),
        ]
    );
}

#[test]
fn mid_stream_connection_that_sends_the_preface() {
    let mut w = Wire::new(true);
    w.client(&[PREFACE.to_vec(), settings(&[]), headers(1, END_STREAM, &get_block("/p"))].concat());
    w.server(&[settings(&[]), headers(1, END_STREAM, &status_block(200, None))].concat());
    assert_eq!(w.one().request.path.as_deref(), Some("/p"));
}

#[test]
fn trailers_of_a_stream_that_predates_the_join_are_ignored() {
    let mut w = Wire::new(true);
    w.client(&headers(7, END_STREAM, &Hb::new().lit("x-checksum", "abc", false).0));
    w.server(&[data(7, 0, 10), headers(7, END_STREAM, &trailers_block(0, None))].concat());
    assert!(w.events.is_empty());
}

#[test]
fn gap_inside_data_is_only_counted() {
    let mut w = Wire::started();
    w.client(&headers(1, 0, &get_block("/upload")));
    let d = data(1, 0, 1000);
    w.client_gap(&d[..109], 900);
    w.client(&data(1, END_STREAM, 10));
    w.server(&headers(1, END_STREAM, &status_block(200, None)));
    let x = w.one();
    assert_eq!((x.request_body_size, x.error), (1010, None));
}

#[test]
fn gap_in_a_header_block_truncates_the_stream_and_poisons_hpack() {
    let mut w = Wire::started();
    let block = Hb::new().idx(3).idx(6).inc_i(4, "/cut", false).inc("x-big", &"b".repeat(200), false).0;
    let f = headers(1, 0, &block);
    w.client_gap(&f[..20], (f.len() - 20) as u64);
    w.client(&data(1, END_STREAM, 3));
    let st = w.started_streams();
    assert_eq!(st.len(), 1);
    assert!(!st[0].1.complete);
    assert_eq!((st[0].1.method.as_deref(), st[0].1.path.as_deref()), (Some("POST"), Some("/cut")));
    w.client(&headers(3, END_STREAM, &Hb::new().idx(2).idx(62).lit_i(4, "/next", false).0));
    let r = &w.started_streams()[1].1;
    assert_eq!((r.path.as_deref(), r.complete), (Some("/next"), false), "table unknown after the gap");
    w.server(
        &[headers(1, END_STREAM, &status_block(200, None)), headers(3, END_STREAM, &status_block(200, None))].concat(),
    );
    let xs = w.exchanges();
    assert_eq!(
        xs.iter().map(|x| (x.stream_id, x.partial, x.error)).collect::<Vec<_>>(),
        [(1, true, Some(Http2Error::Truncated)), (3, true, Some(Http2Error::Partial))]
    );
    assert_eq!(xs[0].request_body_size, 3);
}

#[test]
fn gap_over_a_frame_header_resyncs_and_marks_open_streams() {
    let mut w = Wire::started();
    w.client(&headers(1, 0, &get_block("/a"))); // 4
    w.client(&headers(3, END_STREAM, &get_block("/b"))); // 5
    // DATA for 1, then a frame header swallowed by the gap.
    w.client_gap(&data(1, 0, 10), 50); // 6
    w.client(&[b'?'; 41]); // 7: the rest of the unknown frame: dropped
    w.client(&headers(5, END_STREAM, &get_block("/c"))); // 8: a frame boundary again
    w.server(
        &[headers(1, END_STREAM, &status_block(200, None)), headers(3, END_STREAM, &status_block(200, None))].concat(),
    );
    w.server(&headers(5, END_STREAM, &status_block(200, None)));
    let xs = w.exchanges();
    // Stream 1's END_STREAM may have been in the lost bytes: its response
    // ending is enough once the request side lost sync.
    assert_eq!(
        xs.iter().map(|x| (x.stream_id, x.error)).collect::<Vec<_>>(),
        [(1, Some(Http2Error::Truncated)), (3, Some(Http2Error::Truncated)), (5, None)]
    );
    assert_eq!(xs[0].request_body_size, 10);
    assert_eq!(xs[0].request_last, ts(6));
    assert!(!w.s.is_broken());
}

#[test]
fn server_gap_poisons_the_response_decoder() {
    let mut w = Wire::started();
    w.client(&headers(1, END_STREAM, &get_block("/1")));
    w.client(&headers(3, END_STREAM, &get_block("/3")));
    w.server(&headers(1, 0, &Hb::new().idx(8).inc_i(31, "application/json", false).0));
    w.server_gap(&data(1, 0, 5), 30); // loses sync
    w.server(&headers(3, END_STREAM, &Hb::new().idx(8).idx(62).0));
    let x = w.one();
    assert_eq!((x.stream_id, x.status, x.response_content_type.clone()), (3, Some(200), None));
    assert_eq!(x.error, Some(Http2Error::Truncated));
    w.close(false);
    assert_eq!(w.exchanges()[1].error, Some(Http2Error::ConnectionClosed));
}

#[test]
fn violations_after_joining_resync_instead_of_breaking() {
    let mut w = Wire::new(true);
    w.client(&headers(9, 0, &get_block("/x")));
    // A CONTINUATION with no block open: its HEADERS predates the join or
    // was lost. Skipped, and the HPACK state is treated as unknown.
    w.client(&frame(CONTINUATION, END_HEADERS, 9, &[0x82]));
    assert!(!w.s.is_broken());
    w.client(&data(9, END_STREAM, 2));
    w.server(&headers(9, END_STREAM, &status_block(200, None)));
    let x = w.one();
    assert_eq!((x.error, x.request_body_size), (Some(Http2Error::Truncated), 2));

    // A block interrupted by another stream: the guess was wrong or bytes
    // were lost. The cut block still starts its stream, flagged; the rest
    // of the chunk is dropped and the next chunk resyncs.
    let b = get_block("/y");
    w.client(
        &[frame(HEADERS, END_STREAM, 11, &b[..4]), frame(CONTINUATION, END_HEADERS, 13, &b[4..]), data(11, 0, 1)]
            .concat(),
    );
    assert!(!w.s.is_broken());
    let st = w.started_streams();
    assert_eq!((st[1].0, st[1].1.method.as_deref(), st[1].1.complete), (11, Some("GET"), false));
    w.client(&headers(15, END_STREAM, &get_block("/z")));
    assert_eq!(w.started_streams().len(), 3);
}
