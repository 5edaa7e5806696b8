//! Gaps, huge lengths, garbage and damaged recordings.

use super::recorded::pieces;
use super::*;

fn session_after_login() -> MysqlSession {
    let mut session = MysqlSession::new(false);
    run(&mut session, &super::login(), false);
    session
}

fn rows_reply(n: usize) -> Vec<u8> {
    let values: Vec<String> = (0..n).map(|i| format!("value{i:05}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    result_set(&refs, 2)
}

#[test]
fn client_gap_inside_a_query_is_skipped_by_length() {
    let mut session = session_after_login();
    let sql = format!("SELECT c FROM t WHERE c = '{}'", "x".repeat(10_000));
    let q = query(&sql);
    let mut events = feed(&mut session, true, &q[..4096], q.len() as u64, 100);
    events.extend(send(&mut session, false, &ok(1, 0, 2), 110));
    events.extend(send(&mut session, true, &pkt(0, b"\x0e"), 120));
    events.extend(send(&mut session, false, &ok(1, 0, 2), 130));
    check_events(&events, true);
    let x = exchanges(&events);
    assert_eq!(x.len(), 2);
    assert_eq!(x[0].operation.as_deref(), Some("SELECT"));
    assert_eq!(x[0].failure, Some(DbFailure::Truncated));
    assert!(!x[0].query_text.as_deref().unwrap().contains("xxx"));
    assert_eq!((x[1].operation.as_deref(), x[1].failure), (Some("PING"), None));
}

#[test]
fn client_gap_past_a_packet_resyncs_on_the_next_command() {
    let mut session = session_after_login();
    let mut batch = query("SELECT 1");
    batch.extend(query(&format!("SELECT '{}'", "y".repeat(3000))));
    batch.extend(pkt(0, b"\x0e"));
    // The gap hides the end of the second query and all of the ping.
    let mut events = feed(&mut session, true, &batch[..100], batch.len() as u64, 100);
    // Not a command start while lost: dropped.
    events.extend(send(&mut session, true, b"\x77\x00\x00\x09junk", 105));
    let replies = [result_set(&["1"], 2), ok(1, 0, 2), ok(1, 0, 2)].concat();
    events.extend(send(&mut session, false, &replies, 110));
    events.extend(send(&mut session, true, &pkt(0, b"\x0e"), 120));
    events.extend(send(&mut session, false, &ok(1, 0, 2), 130));
    events.extend(session.on_close(200, false));
    check_events(&events, true);
    let x = exchanges(&events);
    assert_eq!(x.len(), 3, "the hidden ping is not reported");
    assert_eq!((x[0].rows, x[0].failure), (Some(1), None));
    assert_eq!((x[1].operation.as_deref(), x[1].failure), (Some("SELECT"), Some(DbFailure::Truncated)));
    assert_eq!((x[2].operation.as_deref(), x[2].failure), (Some("PING"), None));
    assert_eq!(x[2].response_first, Some(super::ts(130)));
}

#[test]
fn server_gap_across_rows_is_reported_when_the_client_moves_on() {
    let mut session = session_after_login();
    let reply = rows_reply(1000);
    let mut events = send(&mut session, true, &query("SELECT c FROM t"), 100);
    events.extend(feed(&mut session, false, &reply[..4096], 8000, 110));
    // More of the result set, starting mid-row: dropped.
    events.extend(send(&mut session, false, &reply[8000..9000], 120));
    assert!(exchanges(&events).is_empty());
    events.extend(send(&mut session, true, &pkt(0, b"\x0e"), 130));
    let x = exchanges(&events);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].failure, Some(DbFailure::Truncated));
    assert_eq!(x[0].response_last, Some(super::ts(120)));
    assert!(x[0].rows.unwrap() > 100, "rows counted before the gap");
    events.extend(send(&mut session, false, &ok(1, 0, 2), 140));
    events.extend(session.on_close(200, false));
    check_events(&events, true);
    let x = exchanges(&events);
    assert_eq!((x[1].operation.as_deref(), x[1].failure), (Some("PING"), None));
}

#[test]
fn server_gap_ends_at_a_chunk_ending_with_the_terminator() {
    let mut session = session_after_login();
    let reply = rows_reply(1000);
    let mut events = send(&mut session, true, &query("SELECT c FROM t"), 100);
    events.extend(feed(&mut session, false, &reply[..4096], 8000, 110));
    events.extend(feed(&mut session, false, &reply[9000..], (reply.len() - 9000) as u64, 120));
    let x = exchanges(&events);
    assert_eq!(x.len(), 1);
    assert_eq!((x[0].failure, x[0].response_last), (Some(DbFailure::Truncated), Some(super::ts(120))));
    // Back in step: the next reply is parsed from its first byte.
    events.extend(send(&mut session, true, &pkt(0, b"\x0e"), 130));
    events.extend(send(&mut session, false, &ok(1, 0, 2), 140));
    check_events(&events, true);
    assert_eq!(exchanges(&events)[1].failure, None);
}

#[test]
fn gap_inside_a_large_row_keeps_the_count() {
    let mut session = session_after_login();
    let mut head = pkt(1, &[1]);
    head.extend(column_def(2));
    head.extend(eof(3, 2));
    let value_len = 100_000u32;
    let mut row = (value_len + 4).to_le_bytes()[..3].to_vec();
    row.push(4);
    row.extend_from_slice(&[0xfd]);
    row.extend_from_slice(&value_len.to_le_bytes()[..3]);
    head.extend_from_slice(&row);
    let size = head.len() as u64 + u64::from(value_len);
    head.extend(vec![b'z'; 3000]);
    let mut events = send(&mut session, true, &query("SELECT c FROM t"), 100);
    events.extend(feed(&mut session, false, &head, size, 110));
    events.extend(send(&mut session, false, &[row_bytes(5, "b"), eof(6, 2)].concat(), 120));
    let x = exchanges(&events);
    assert_eq!(x.len(), 1);
    assert_eq!((x[0].rows, x[0].failure), (Some(2), Some(DbFailure::Truncated)));
    assert_eq!(x[0].response_last, Some(super::ts(120)));
}

fn row_bytes(seq: u8, v: &str) -> Vec<u8> {
    super::row(seq, v)
}

#[test]
fn huge_lengths_never_grow_buffers() {
    let mut session = session_after_login();
    send(&mut session, true, &query("SELECT c FROM t"), 100);
    let mut start = pkt(1, &[1]);
    start.extend(column_def(2));
    start.extend(eof(3, 2));
    start.extend_from_slice(&[0xfe, 0xff, 0xff, 4, 0xfc]);
    feed(&mut session, false, &start, start.len() as u64, 110);
    for i in 0..1000u64 {
        assert!(feed(&mut session, false, &[0x41; 1000], 1000, 120 + i).is_empty());
    }
    assert!(session.buffered() <= 4096, "{}", session.buffered());
    // A client packet announcing 16 MiB arrives in small pieces.
    let mut big = vec![0xff, 0xff, 0xff, 0, 0x03];
    big.extend_from_slice(b"SELECT ");
    feed(&mut session, true, &big, big.len() as u64, 2000);
    for i in 0..300u64 {
        feed(&mut session, true, &[b'a'; 1000], 1000, 2001 + i);
    }
    assert!(session.buffered() <= 40 * 1024, "{}", session.buffered());
    let events = session.on_close(9000, true);
    let x = exchanges(&events);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].failure, Some(DbFailure::ConnectionReset));
}

#[test]
fn multi_part_command_over_16_mib() {
    let mut session = session_after_login();
    let mut first = vec![0xff, 0xff, 0xff, 0];
    first.extend_from_slice(b"\x03SELECT c FROM t WHERE c IN (");
    first.extend(vec![b'1'; 4000]);
    let mut events = feed(&mut session, true, &first, 4 + 0xff_ffff, 100);
    assert!(events.is_empty(), "the message goes on in the next part");
    let mut second = vec![3, 0, 0, 1];
    second.extend_from_slice(b"1);");
    events.extend(send(&mut session, true, &second, 110));
    assert!(matches!(events[..], [DbEvent::Started { seq: 0, first }] if first == super::ts(100)));
    // The reply continues the sequence after the last part.
    // Sequence id 1 is not this reply's: dropped.
    events.extend(send(&mut session, false, &ok(1, 0, 2), 115));
    let mut reply = pkt(2, &[1]);
    reply.extend(column_def(3));
    reply.extend(eof(4, 2));
    reply.extend(row(5, "1"));
    reply.extend(eof(6, 2));
    events.extend(feed(&mut session, false, &reply, reply.len() as u64, 120));
    let x = exchanges(&events);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].operation.as_deref(), Some("SELECT"));
    assert_eq!((x[0].request_first, x[0].request_last), (super::ts(100), super::ts(110)));
    assert_eq!((x[0].rows, x[0].failure), (Some(1), Some(DbFailure::Truncated)));
}

#[test]
fn mid_stream_prepare_with_unknown_eof_mode() {
    // No handshake: whether a PREPARE reply ends with an EOF is unknown
    // until the next packet shows it.
    let mut session = MysqlSession::new(true);
    let mut events = send(&mut session, true, &pkt(0, b"\x16SELECT c FROM t"), 100);
    let mut prep = pkt(1, &[0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    prep.extend(column_def(2));
    events.extend(feed(&mut session, false, &prep, prep.len() as u64, 110));
    assert_eq!(exchanges(&events).len(), 1, "done at the last definition");
    events.extend(send(&mut session, false, &eof(3, 2), 111));
    events.extend(send(&mut session, true, &pkt(0, &[0x17, 3, 0, 0, 0, 0, 1, 0, 0, 0]), 120));
    events.extend(send(&mut session, false, &result_set(&["a", "b"], 2), 130));
    events.extend(session.on_close(200, false));
    check_events(&events, true);
    let x = exchanges(&events);
    assert_eq!(x.len(), 2);
    assert_eq!((x[1].operation.as_deref(), x[1].rows, x[1].failure), (Some("SELECT"), Some(2), None));
}

#[test]
fn non_mysql_streams_break_the_session() {
    let mut session = MysqlSession::new(true);
    for i in 0..300u64 {
        feed(&mut session, true, b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", 35, i);
    }
    assert!(session.is_broken());
}

/// Deterministic xorshift, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut session = MysqlSession::new(round % 2 == 0);
        let mut events = Vec::new();
        for i in 0..40u64 {
            let len = rng.below(300) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Plausible headers now and then, to get past the first checks.
            if rng.below(3) == 0 && data.len() > 5 {
                data[3] = 0;
                data[4] = [0x03, 0x0e, 0x17, 0x16, 0x0a][rng.below(5) as usize];
            }
            let size = if rng.below(8) == 0 { len as u64 + rng.below(u64::MAX / 2) } else { len as u64 };
            events.extend(feed(&mut session, rng.below(2) == 0, &data, size, i));
        }
        events.extend(session.on_close(1000, false));
        check_events(&events, true);
    }
}

#[test]
fn damaged_recordings_never_panic() {
    let mut rng = Rng(42);
    let recs: [&[u8]; 5] = [
        include_bytes!("../../../../../tests/recordings/mysql-cli.rec"),
        include_bytes!("../../../../../tests/recordings/mysql-capi.rec"),
        include_bytes!("../../../../../tests/recordings/mysql-deprecate-eof.rec"),
        include_bytes!("../../../../../tests/recordings/mysql-large.rec"),
        include_bytes!("../../../../../tests/recordings/mysql-tls.rec"),
    ];
    for round in 0..500 {
        let mut all = pieces(recs[round % recs.len()]);
        for _ in 0..rng.below(6) + 1 {
            let i = rng.below(all.len() as u64) as usize;
            if all[i].data.is_empty() {
                continue;
            }
            let j = rng.below(all[i].data.len() as u64) as usize;
            match rng.below(3) {
                0 => all[i].data[j] = rng.next() as u8,
                1 => {
                    all[i].data.truncate(j);
                }
                _ => all[i].size += rng.below(100_000),
            }
        }
        let mut session = MysqlSession::new(round % 4 == 0);
        run(&mut session, &all, true);
    }
}

#[test]
fn mid_stream_reply_that_cannot_be_recognised_is_given_up() {
    // The first server bytes seen are not the start of the reply (its
    // start was missed): nothing to resync on until the client moves on.
    let mut session = MysqlSession::new(true);
    let mut events = send(&mut session, true, &query("SELECT c FROM t"), 100);
    events.extend(send(&mut session, false, &[row(5, "abc"), eof(6, 2)].concat()[2..], 110));
    events.extend(send(&mut session, true, &pkt(0, b"\x0e"), 120));
    events.extend(send(&mut session, false, &ok(1, 0, 2), 130));
    events.extend(session.on_close(200, false));
    check_events(&events, true);
    let x = exchanges(&events);
    assert_eq!(x.len(), 2);
    assert_eq!((x[0].failure, x[0].response_last), (Some(DbFailure::Truncated), Some(super::ts(110))));
    assert_eq!((x[1].operation.as_deref(), x[1].failure), (Some("PING"), None));
}
