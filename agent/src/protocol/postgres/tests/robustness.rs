//! Gaps, mid-stream starts, garbage, huge lengths, bounds, redaction, and
//! arbitrary input.

use super::*;
use crate::protocol::db::{DbFailure, MAX_IN_FLIGHT};

#[test]
fn gap_inside_a_data_row_is_skipped_exactly() {
    let mut d = Driver::connected();
    d.client(&query("SELECT blob FROM files"));
    let big = vec![b'x'; 1 << 20];
    let row = data_row(&[&big]);
    d.server(&row_description(&["blob"]));
    d.server_cut(&row, 4096);
    d.server(&cat(&[data_row(&[b"small"]), complete("SELECT 2"), ready()]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 1);
    assert_eq!((xs[0].rows, xs[0].failure), (Some(2), None), "no data was needed from the gap");
    assert!(d.session.buffered() <= 4096, "row bodies are never buffered");
}

#[test]
fn data_row_split_over_many_chunks_is_not_buffered() {
    let mut d = Driver::connected();
    d.client(&query("SELECT blob FROM files"));
    let big = vec![b'y'; 300_000];
    let reply = cat(&[data_row(&[&big]), complete("SELECT 1"), ready()]);
    for piece in reply.chunks(1000) {
        d.server(piece);
        assert_eq!(d.session.buffered(), 0);
    }
    assert_eq!(d.exchanges()[0].rows, Some(1));
}

#[test]
fn server_gap_past_message_ends_resyncs_at_ready_for_query() {
    let mut d = Driver::connected();
    d.client(&query("SELECT n FROM generate_series(1, 500) n"));
    let rows: Vec<Vec<u8>> = (0..500).map(|i| data_row(&[format!("{i:05}").as_bytes()])).collect();
    let rows = rows.concat();
    let reply = cat(&[row_description(&["n"]), rows.clone(), complete("SELECT 500"), ready()]);
    // Three syscalls; the first two lose their tails, the cut lands mid-row.
    let (a, rest) = reply.split_at(3000);
    let (b, c) = rest.split_at(3001);
    d.server_cut(a, 1000);
    d.server_cut(b, 17);
    assert!(d.exchanges().is_empty());
    d.server(c);
    let xs = d.exchanges();
    assert_eq!(xs.len(), 1);
    assert_eq!(xs[0].rows, Some(500), "the CommandComplete before ReadyForQuery is read");
    assert_eq!(xs[0].failure, Some(DbFailure::Truncated));
    // Framing is back: the next command pairs normally.
    d.client(&query("SELECT 1"));
    d.server(&cat(&[complete("SELECT 1"), ready()]));
    let xs = d.exchanges();
    assert_eq!((xs.len(), xs[1].failure, xs[1].rows), (2, None, Some(1)));
}

#[test]
fn server_gap_hiding_the_end_settles_when_the_next_reply_starts() {
    let mut d = Driver::connected();
    d.client(&query("SELECT n FROM big"));
    let rows: Vec<u8> = (0..300).flat_map(|i| data_row(&[format!("{i:05}").as_bytes()])).collect();
    let reply = cat(&[row_description(&["n"]), rows, complete("SELECT 300"), ready()]);
    d.server_cut(&reply, 500); // ReadyForQuery is in the gap
    d.client(&query("UPDATE t SET a = 1"));
    d.server(&cat(&[complete("UPDATE 4"), ready()]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!((xs[0].failure, xs[0].collection.as_deref()), (Some(DbFailure::Truncated), Some("big")));
    assert_eq!((xs[1].failure, xs[1].rows), (None, Some(4)));
}

#[test]
fn terminate_after_a_lost_reply_ends_it() {
    let mut d = Driver::connected();
    d.client(&query("SELECT n FROM big"));
    let rows: Vec<u8> = (0..300).flat_map(|i| data_row(&[format!("{i:05}").as_bytes()])).collect();
    d.server_cut(&cat(&[row_description(&["n"]), rows, complete("SELECT 300"), ready()]), 500);
    d.client(&msg(b'X', b""));
    let xs = d.exchanges();
    assert_eq!((xs.len(), xs[0].failure), (1, Some(DbFailure::Truncated)));
}

#[test]
fn client_gap_inside_a_long_query_keeps_framing() {
    let mut d = Driver::connected();
    let sql = format!("INSERT INTO logs (msg) VALUES ('{}')", "z".repeat(100_000));
    let q = query(&sql);
    d.client_cut(&q, 4096);
    d.server(&cat(&[complete("INSERT 0 1"), ready()]));
    d.client(&query("SELECT 1"));
    d.server(&cat(&[complete("SELECT 1"), ready()]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!(xs[0].operation.as_deref(), Some("INSERT"));
    assert_eq!(xs[0].collection.as_deref(), Some("logs"));
    assert_eq!(xs[0].query_text.as_deref(), Some("INSERT INTO logs (msg) VALUES (?"));
    assert_eq!((xs[0].failure, xs[0].rows), (Some(DbFailure::Truncated), Some(1)));
    assert_eq!(xs[1].failure, None);
}

#[test]
fn client_gap_hiding_execute_assumes_it() {
    let mut d = Driver::connected();
    let long = format!("SELECT * FROM wide WHERE a IN ({})", "1,".repeat(5000) + "1");
    let batch = cat(&[parse("", &long), bind("", "", &[]), execute("", 0), sync()]);
    d.client_cut(&batch, 2048);
    assert_eq!(d.started(), 1, "the Execute in the gap is assumed");
    d.server(&cat(&[msg(b'1', b""), msg(b'2', b""), data_row(&[b"1"]), complete("SELECT 1"), ready()]));
    d.client(&query("SELECT 2"));
    d.server(&cat(&[complete("SELECT 1"), ready()]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!(xs[0].collection.as_deref(), Some("wide"));
    assert_eq!((xs[0].rows, xs[0].failure), (Some(1), Some(DbFailure::Truncated)));
    assert_eq!((xs[1].rows, xs[1].failure), (Some(1), None));
}

#[test]
fn mid_stream_start_resyncs_on_message_boundaries() {
    let mut d = Driver::new(true);
    // The tail of a query and of a result from before capture started.
    d.client(b"ERE id = 5\0");
    d.server(b"\x00\x03abc\x00\x00\x00\x01x");
    d.server(&cat(&[complete("SELECT 1"), ready()]));
    assert!(!d.session.is_broken());
    d.client(&cat(&[bind("", "unknown", &[]), execute("", 0), sync()]));
    d.server(&cat(&[msg(b'2', b""), data_row(&[b"1"]), complete("SELECT 1"), ready()]));
    d.client(&query("DELETE FROM t"));
    d.server(&cat(&[complete("DELETE 3"), ready()]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!((xs[0].operation.clone(), xs[0].rows, xs[0].failure), (None, Some(1), None));
    assert_eq!((xs[1].operation.as_deref(), xs[1].rows), (Some("DELETE"), Some(3)));
    assert_eq!(xs[1].namespace, None, "the startup was not seen");
}

#[test]
fn mid_stream_on_something_else_breaks() {
    let mut d = Driver::new(true);
    for _ in 0..10 {
        d.client(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    assert!(d.session.is_broken());
}

#[test]
fn garbage_first_bytes_break_the_session() {
    for bytes in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"\x00\x00\x00\x08\x00\x02\x00\x00",
    ] {
        let mut d = Driver::new(false);
        d.client(bytes);
        assert!(d.session.is_broken(), "{bytes:?}");
    }
    let mut d = Driver::connected();
    d.client(&query("SELECT 1"));
    d.server(b"HTTP/1.1 200 OK\r\n\r\n");
    assert!(!d.session.is_broken(), "the server was PostgreSQL before");
    let mut d = Driver::new(false);
    d.client(&startup("u", None));
    d.server(b"HTTP/1.1 200 OK\r\n\r\n");
    assert!(d.session.is_broken(), "the server never spoke PostgreSQL");
}

#[test]
fn client_garbage_after_valid_messages_resyncs() {
    let mut d = Driver::connected();
    d.client(&query("SELECT 1"));
    d.server(&cat(&[complete("SELECT 1"), ready()]));
    d.client(b"\xff\xfe\xfd garbage garbage");
    assert!(!d.session.is_broken());
    d.client(&query("SELECT 2"));
    d.server(&cat(&[complete("SELECT 1"), ready()]));
    assert_eq!(d.exchanges().len(), 2);
}

#[test]
fn huge_length_fields() {
    // Beyond any valid length: invalid, not a 2 GiB wait.
    let mut d = Driver::connected();
    d.client(b"Q\x7f\xff\xff\xffSELECT");
    d.client(&query("SELECT 1"));
    d.server(&cat(&[complete("SELECT 1"), ready()]));
    assert_eq!(d.exchanges().len(), 1);
    // A valid but huge length is skipped by counting, never buffered.
    let mut d = Driver::connected();
    d.client(&query("SELECT 1"));
    let mut huge = b"D\x3f\xff\xff\xff\x00\x01\x3f\xff\xff\xf5".to_vec();
    huge.extend(vec![b'x'; 1000]);
    d.server(&huge);
    assert!(d.session.buffered() <= 4096);
    // Fixed-size messages with another length are invalid.
    let mut d = Driver::connected();
    d.client(&query("SELECT 1"));
    d.server(b"Z\x00\x00\x00\x06II");
    d.server(&cat(&[complete("SELECT 1"), ready()]));
    assert_eq!(d.exchanges().len(), 1);
}

#[test]
fn in_flight_commands_are_bounded() {
    let mut d = Driver::connected();
    let q = query("SELECT 1");
    for _ in 0..(MAX_IN_FLIGHT + 100) {
        d.client(&q);
    }
    assert!(d.session.in_flight() <= MAX_IN_FLIGHT);
    let xs = d.exchanges();
    assert_eq!(xs.len(), 100);
    assert!(xs.iter().all(|x| x.failure == Some(DbFailure::Truncated)));
    d.close(false);
    assert_eq!(d.exchanges().len(), MAX_IN_FLIGHT + 100);
}

#[test]
fn prepared_statements_are_bounded() {
    let mut d = Driver::connected();
    for i in 0..2000 {
        d.client(&parse(&format!("stmt_{i}"), "SELECT 1"));
        if i % 3 == 0 {
            d.client(&close_statement(&format!("stmt_{i}")));
        }
    }
    let (named, order) = d.session.statements();
    assert!(named <= super::super::statements::MAX_STATEMENTS);
    assert!(order <= 2 * super::super::statements::MAX_STATEMENTS + 16);
    // The newest are still known.
    d.client(&cat(&[bind("", "stmt_1999", &[]), execute("", 0), sync()]));
    d.server(&cat(&[complete("SELECT 1"), ready()]));
    assert_eq!(d.exchanges()[0].operation.as_deref(), Some("SELECT"));
}

#[test]
fn passwords_and_parameters_are_never_exported() {
    let mut d = Driver::new(false);
    d.client(&startup("app", Some("shop")));
    d.server(&msg(b'R', &3i32.to_be_bytes()));
    // The password message split over chunks, to force partial framing.
    let pw = password("hunter2-very-secret");
    d.client(&pw[..7]);
    d.client(&pw[7..]);
    assert_eq!(d.session.buffered(), 0, "password bytes are not kept");
    d.server(&server_hello());
    d.client(&cat(&[
        parse("", "SELECT * FROM users WHERE email = $1 AND pin = '1234'"),
        bind("", "", &[b"bob@example.com"]),
        execute("", 0),
        sync(),
    ]));
    d.server(&cat(&[msg(b'2', b""), data_row(&[b"row-secret"]), complete("SELECT 1"), ready()]));
    let dump = format!("{:?}", d.events);
    for secret in ["hunter2", "bob@example.com", "1234", "row-secret"] {
        assert!(!dump.contains(secret), "{secret} leaked: {dump}");
    }
    assert_eq!(d.exchanges()[0].query_text.as_deref(), Some("SELECT * FROM users WHERE email = $1 AND pin = ?"));
}

#[test]
fn ssl_request_answered_n_continues_and_s_breaks() {
    let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut d = Driver::new(false);
    d.client(&ssl);
    d.server(b"N");
    d.client(&startup("app", Some("db")));
    d.server(&server_hello());
    d.client(&query("SELECT 1"));
    d.server(&cat(&[complete("SELECT 1"), ready()]));
    assert_eq!(d.exchanges()[0].namespace.as_deref(), Some("db"));
    let mut d = Driver::new(false);
    d.client(&ssl);
    d.server(b"S");
    assert!(d.session.is_broken());
    // TLS sent although the answer was not captured.
    let mut d = Driver::new(false);
    d.client(&ssl);
    d.client(b"\x16\x03\x01\x01\x20\x01\x00\x01\x1c\x03\x03");
    assert!(d.session.is_broken());
    // GSS encryption accepted.
    let mut d = Driver::new(false);
    d.client(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]);
    d.server(b"G");
    assert!(d.session.is_broken());
}

#[test]
fn cancel_request_connection_has_no_exchange() {
    let mut d = Driver::new(false);
    d.client(&[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 1, 2, 3, 4]);
    d.close(false);
    assert!(d.exchanges().is_empty());
    assert!(!d.session.is_broken());
}

/// xorshift64: deterministic noise.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Feeds `stream` cut at random points, with random gaps and both
/// directions, checking only the contract (no panic, event order).
fn chaos(seed: u64, client: &[u8], server: &[u8], mid_stream: bool) {
    let mut s = seed | 1;
    let mut d = Driver::new(mid_stream);
    let (mut ci, mut si) = (0usize, 0usize);
    while ci < client.len() || si < server.len() {
        let from_client = si >= server.len() || (ci < client.len() && rng(&mut s).is_multiple_of(2));
        let (buf, at) = if from_client { (client, &mut ci) } else { (server, &mut si) };
        let len = (1 + rng(&mut s) % 300) as usize;
        let end = (*at + len).min(buf.len());
        let piece = &buf[*at..end];
        *at = end;
        if rng(&mut s).is_multiple_of(8) {
            let captured = (rng(&mut s) as usize) % (piece.len() + 1);
            if from_client {
                d.client_cut(piece, captured)
            } else {
                d.server_cut(piece, captured)
            };
        } else if from_client {
            d.client(piece);
        } else {
            d.server(piece);
        }
    }
    d.close(seed.is_multiple_of(2));
    let xs = d.exchanges();
    assert_eq!(xs.len(), d.started(), "one exchange per Started");
}

#[test]
fn arbitrary_input_never_panics() {
    let client = cat(&[
        startup("app", Some("db")),
        query("SELECT 'x' FROM t"),
        parse("s", "UPDATE t SET a = $1"),
        bind("", "s", &[b"1"]),
        execute("", 0),
        sync(),
        msg(b'd', b"copy"),
        query("COMMIT"),
    ]);
    let server = cat(&[
        server_hello(),
        row_description(&["a"]),
        data_row(&[b"1"]),
        complete("SELECT 1"),
        ready(),
        msg(b'1', b""),
        msg(b'2', b""),
        error_response("XX000", "boom"),
        ready(),
        complete("COMMIT"),
        ready(),
    ]);
    for seed in 0..300u64 {
        chaos(seed, &client, &server, seed % 3 == 0);
        // Flip bytes too.
        let mut c = client.clone();
        let mut sv = server.clone();
        let mut st = seed.wrapping_mul(0x9e37_79b9) | 1;
        for _ in 0..4 {
            let i = rng(&mut st) as usize % c.len();
            c[i] = rng(&mut st) as u8;
            let j = rng(&mut st) as usize % sv.len();
            sv[j] = rng(&mut st) as u8;
        }
        chaos(seed, &c, &sv, seed % 2 == 0);
    }
    // Pure noise.
    let mut st = 7u64;
    for round in 0..200 {
        let noise: Vec<u8> = (0..(round * 13 % 2000)).map(|_| rng(&mut st) as u8).collect();
        chaos(round as u64, &noise, &noise, round % 2 == 0);
    }
}

#[test]
fn resync_refuses_a_huge_length_running_past_the_chunk() {
    let mut d = Driver::new(true);
    d.client(&query("SELECT 1"));
    // Mid-row bytes that happen to start like a 768 MiB CopyData.
    let mut fake = b"d\x30\x00\x00\x00".to_vec();
    fake.extend(vec![b'q'; 200]);
    d.server(&fake);
    d.server(&cat(&[row_description(&["a"]), data_row(&[b"1"]), complete("SELECT 1"), ready()]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 1);
    assert_eq!((xs[0].rows, xs[0].failure), (Some(1), None));
}

#[test]
fn extended_unit_spread_over_writes_starts_at_its_parse() {
    let mut d = Driver::connected();
    let p = d.client(&parse("", "DELETE FROM t"));
    d.client(&bind("", "", &[]));
    let e = d.client(&cat(&[execute("", 0), sync()]));
    assert_eq!(d.events.last(), Some(&crate::protocol::db::DbEvent::Started { seq: 0, first: Driver::ts(p) }));
    d.server(&cat(&[msg(b'1', b""), msg(b'2', b""), complete("DELETE 2"), ready()]));
    let x = &d.exchanges()[0];
    assert_eq!((x.request_first, x.request_last), (Driver::ts(p), Driver::ts(e)));
    assert_eq!((x.operation.as_deref(), x.rows), (Some("DELETE"), Some(2)));
}
