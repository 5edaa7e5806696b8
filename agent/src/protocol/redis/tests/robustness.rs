//! Gaps, resync, mid-stream start, garbage, huge lengths, close, bounds.

use super::*;

#[test]
fn big_values_are_skipped_over_gaps() {
    let value_len = 1024 * 1024;
    let mut set = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${value_len}\r\n").into_bytes();
    let total = set.len() as u64 + value_len + 2;
    set.resize(4096, b'x');
    let mut d = Driver::new();
    d.client_gap(&set, total).server(b"+OK\r\n");
    let mut reply = format!("${value_len}\r\n").into_bytes();
    reply.resize(reply.len() + value_len as usize, b'y');
    reply.extend(b"\r\n");
    d.client(&cmd(&["GET", "big"]));
    // The reply read 64 KiB at a time, each read captured to 4 KiB.
    for read in reply.chunks(65536) {
        d.server_gap(&read[..read.len().min(4096)], read.len() as u64);
    }
    d.client(&cmd(&["PING"])).server(b"+PONG\r\n");
    let x = d.exchanges();
    assert_eq!(d.ops(), ["SET", "GET", "PING"]);
    assert!(x.iter().all(|x| x.failure.is_none()), "{x:#?}");
    assert_eq!(x[0].query_text.as_deref(), Some("SET big ?"));
}

#[test]
fn gap_past_a_command_resyncs_on_the_next() {
    let mut d = Driver::new();
    // Three pipelined commands, only the first captured.
    let batch = [cmd(&["GET", "a"]), cmd(&["GET", "b"]), cmd(&["GET", "c"])].concat();
    let first = cmd(&["GET", "a"]).len();
    d.client_gap(&batch[..first], batch.len() as u64);
    d.server(b"$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n");
    d.client(&cmd(&["GET", "d"])).server(b"$1\r\n4\r\n");
    let x = d.exchanges();
    assert_eq!(d.texts(), ["GET a", "GET d"]);
    assert!(x.iter().all(|x| x.failure.is_none()));
    // A gap inside a header line: the command is cut, the next one is fine.
    let mut d = Driver::new();
    let set = cmd(&["SET", "key", "value"]);
    d.client_gap(&set[..15], set.len() as u64).server(b"+OK\r\n");
    d.client(&cmd(&["GET", "key"])).server(b"$5\r\nvalue\r\n");
    let x = d.exchanges();
    assert_eq!(x.len(), 2);
    assert_eq!(x[0].failure, Some(DbFailure::Truncated));
    assert_eq!(x[0].operation.as_deref(), Some("SET"));
    assert!(x[1].failure.is_none());
}

#[test]
fn server_gap_truncates_the_replies_in_flight() {
    let mut d = Driver::new();
    d.client(&[cmd(&["LRANGE", "l", "0", "-1"]), cmd(&["GET", "x"])].concat());
    let mut reply = b"*1000\r\n".to_vec();
    for _ in 0..1000 {
        reply.extend(b"$5\r\nhello\r\n");
    }
    reply.extend(b"$1\r\nz\r\n");
    d.server_gap(&reply[..4096], reply.len() as u64);
    d.client(&cmd(&["PING"])).server(b"+PONG\r\n");
    let x = d.exchanges();
    assert_eq!(d.ops(), ["LRANGE", "GET", "PING"]);
    assert_eq!(x[0].failure, Some(DbFailure::Truncated));
    assert!(x[0].response_first.is_some());
    assert_eq!(x[1].failure, Some(DbFailure::Truncated));
    assert!(x[2].failure.is_none());
}

#[test]
fn key_hidden_by_a_gap_is_truncated() {
    let mut d = Driver::new();
    let key = "k".repeat(1000);
    let get = cmd(&["GET", &key]);
    d.client_gap(&get[..100], get.len() as u64).server(b"$-1\r\n");
    // A key longer than the text limit: the hidden part would be cut anyway.
    let key = "k".repeat(10_000);
    let get = cmd(&["GET", &key]);
    d.client_gap(&get[..4096], get.len() as u64).server(b"$-1\r\n");
    let x = d.exchanges();
    assert_eq!(x[0].failure, Some(DbFailure::Truncated));
    assert_eq!(x[0].query_text.as_ref().unwrap().len(), "GET ".len() + 100 - "*2\r\n$3\r\nGET\r\n$1000\r\n".len());
    assert!(x[1].failure.is_none());
    assert_eq!(x[1].query_text.as_ref().unwrap().len(), MAX_QUERY_TEXT);
}

#[test]
fn mid_stream_start() {
    let mut d = Driver::mid_stream();
    // The tail of some value, then replies to commands never seen.
    d.client(b"lue\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n");
    d.server(b"xyz\r\n+OK\r\n");
    d.server(b"$1\r\n1\r\n");
    assert!(d.exchanges().is_empty());
    d.client(&cmd(&["GET", "b"])).server(b"$1\r\n2\r\n");
    d.client(&cmd(&["SELECT", "4"])).server(b"+OK\r\n");
    let x = d.exchanges();
    assert_eq!(d.texts(), ["GET b", "SELECT 4"]);
    assert_eq!(x[0].namespace, None, "unknown until a SELECT");
    assert_eq!(x[1].namespace.as_deref(), Some("4"));
    assert!(!d.session.is_broken());
}

#[test]
fn garbage_breaks_a_fresh_session() {
    let mut d = Driver::new();
    d.client(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").server(b"HTTP/1.1 200 OK\r\n\r\n");
    assert!(d.session.is_broken());
    let mut d = Driver::new();
    d.client(b"*1\r\n+PING\r\n");
    assert!(d.session.is_broken());
    // Once replies have been paired, garbage only costs a resync.
    let mut d = Driver::new();
    d.client(&cmd(&["PING"])).server(b"+PONG\r\n");
    d.client(b"*1\r\nXX\r\n").server(b"-ERR Protocol error\r\n");
    d.client(&cmd(&["PING"])).server(b"+PONG\r\n");
    assert!(!d.session.is_broken());
    assert_eq!(d.exchanges().last().unwrap().operation.as_deref(), Some("PING"));
}

#[test]
fn huge_length_fields_allocate_nothing() {
    let mut d = Driver::new();
    d.client(&cmd(&["LRANGE", "l", "0", "-1"]));
    d.server(b"*2147483647\r\n");
    d.server(b"$9223372036854775807\r\nabc");
    d.server(b"%4611686018427387904\r\n");
    assert!(d.exchanges().is_empty());
    d.close(false);
    assert_eq!(d.exchanges()[0].failure, Some(DbFailure::ConnectionClosed));
    // Client side: more arguments than Redis accepts is no command.
    let mut d = Driver::new();
    d.client(b"*2147483647\r\n$3\r\nSET\r\n");
    assert!(d.session.is_broken());
    // Lengths that overflow.
    let mut d = Driver::new();
    d.client(&cmd(&["GET", "a"])).server(b"$99999999999999999999\r\n");
    assert!(d.session.is_broken());
    // Absurd but well-formed counts are only counted down.
    let mut d = Driver::new();
    d.client(&cmd(&["GET", "a"])).server(b"%9223372036854775807\r\n+a\r\n");
    assert!(!d.session.is_broken() && d.exchanges().is_empty());
}

#[test]
fn nesting_is_bounded() {
    let mut d = Driver::new();
    d.client(&cmd(&["GET", "a"])).server(b"+OK\r\n");
    d.client(&cmd(&["X"]));
    d.server(&b"*1\r\n".repeat(100_000));
    let x = d.exchanges();
    assert_eq!(x[1].failure, Some(DbFailure::Truncated));
    // Within the bound it parses.
    let mut d = Driver::new();
    let mut r = b"*1\r\n".repeat(super::super::MAX_DEPTH);
    r.extend(b":1\r\n");
    d.client(&cmd(&["X"])).server(&r);
    assert!(d.exchanges()[0].failure.is_none());
}

#[test]
fn close_with_commands_in_flight() {
    let mut d = Driver::new();
    d.client(&[cmd(&["GET", "a"]), cmd(&["GET", "b"]), cmd(&["GET", "c"])].concat());
    d.client(b"*2\r\n$3\r\nGET\r\n$1");
    d.server(b"$1\r\n1\r\n$5\r\nhel");
    d.close(true);
    let x = d.exchanges();
    assert_eq!(x.len(), 4);
    assert!(x[0].failure.is_none());
    assert_eq!(x[1].failure, Some(DbFailure::ConnectionReset));
    assert!(x[1].response_first.is_some(), "its reply had begun");
    assert_eq!(x[1].closed_ns, Some(40));
    assert!(x[2].response_first.is_none());
    assert_eq!(x[3].operation.as_deref(), Some("GET"));
    assert_eq!(x[3].failure, Some(DbFailure::ConnectionReset));
    let mut d = Driver::new();
    d.client(&cmd(&["PING"])).close(false);
    assert_eq!(d.exchanges()[0].failure, Some(DbFailure::ConnectionClosed));
}

#[test]
fn in_flight_is_bounded() {
    let mut d = Driver::new();
    let batch: Vec<u8> = (0..MAX_IN_FLIGHT + 10).flat_map(|i| cmd(&["GET", &format!("k{i}")])).collect();
    d.client(&batch);
    let x = d.exchanges();
    assert_eq!(x.len(), 10);
    assert!(x.iter().all(|x| x.failure == Some(DbFailure::Truncated)));
    // The evicted commands' replies are skipped, the others pair right.
    let replies: Vec<u8> = (0..MAX_IN_FLIGHT + 10).flat_map(|i| format!(":{i}\r\n").into_bytes()).collect();
    d.server(&replies);
    let x = d.exchanges();
    assert_eq!(x.len(), MAX_IN_FLIGHT + 10);
    assert!(x[10..].iter().all(|x| x.failure.is_none()));
}

/// Arbitrary bytes, chunking and gaps never panic, and the event rules hold.
#[test]
fn random_input_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let pieces: &[&[u8]] = &[
        b"*",
        b"$",
        b"\r\n",
        b"3",
        b"-1",
        b"SET",
        b"+OK",
        b":",
        b">",
        b"|1",
        b"%",
        b"~",
        b"_",
        b"!",
        b"=",
        b"(",
        b"#t",
        b",",
        b"subscribe",
        b"message",
        b"\xff",
        b"9999999999",
        b"0",
        b"PING\r\n",
    ];
    for round in 0..3000 {
        let mut d = if round % 3 == 0 { Driver::mid_stream() } else { Driver::new() };
        for _ in 0..(next() % 40) {
            let mut data = Vec::new();
            for _ in 0..(next() % 12) {
                data.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let size = if next() % 8 == 0 { data.len() as u64 + next() % 5000 } else { data.len() as u64 };
            if next() % 2 == 0 {
                d.client_gap(&data, size);
            } else {
                d.server_gap(&data, size);
            }
        }
        d.close(next() % 2 == 0);
        assert_eq!(d.started(), d.exchanges().len(), "every Started gets its Exchange after close");
    }
}
