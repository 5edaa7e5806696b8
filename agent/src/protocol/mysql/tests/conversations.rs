//! Synthetic conversations: pairing, pipelining, errors, handshake and
//! authentication, namespaces, prepared statements, bounds, detection.

use super::super::{ends_with_terminator, looks_like_reply_start};
use super::*;

#[test]
fn query_reply_pairing_and_handshake_fields() {
    let mut pieces = login();
    pieces.push(c(query("SELECT c FROM t WHERE id = 42")));
    pieces.push(s(result_set(&["a", "b", "c"], 2)));
    pieces.push(c(query("UPDATE t SET c = 'x'")));
    pieces.push(s(ok(1, 5, 2)));
    let mut session = MysqlSession::new(false);
    let x = exchanges(&run(&mut session, &pieces, true));
    assert_eq!(x.len(), 2);
    assert_eq!(x[0].operation.as_deref(), Some("SELECT"));
    assert_eq!(x[0].collection.as_deref(), Some("t"));
    assert!(!x[0].query_text.as_deref().unwrap().contains("42"));
    assert_eq!(x[0].rows, Some(3));
    assert_eq!(x[0].user.as_deref(), Some("app"));
    assert_eq!(x[0].namespace.as_deref(), Some("shop"));
    assert_eq!(x[0].request_first, ts(40));
    assert_eq!(x[0].response_first, Some(ts(50)));
    assert_eq!(x[0].response_last, Some(ts(50)));
    assert_eq!(x[0].failure, None);
    assert_eq!(x[0].batch_size, 1);
    assert_eq!(x[1].operation.as_deref(), Some("UPDATE"));
    assert_eq!(x[1].rows, Some(5));
    assert!(!session.is_broken());
}

#[test]
fn started_comes_before_the_reply() {
    let mut session = MysqlSession::new(false);
    run(&mut session, &login(), false);
    let ev = send(&mut session, true, &query("SELECT 1"), 100);
    assert_eq!(ev, vec![DbEvent::Started { seq: 0, first: ts(100) }]);
    let ev = send(&mut session, false, &result_set(&["1"], 2), 110);
    assert!(matches!(&ev[..], [DbEvent::Exchange(x)] if x.rows == Some(1)));
}

#[test]
fn pipelined_commands_pair_in_order() {
    let mut pieces = login();
    let mut batch = query("SELECT c FROM t");
    batch.extend(query("DELETE FROM t WHERE id = 1"));
    batch.extend(query("SELECT nope FROM t"));
    pieces.push(c(batch));
    let mut replies = result_set(&["a", "b"], 2);
    replies.extend(ok(1, 1, 2));
    replies.extend(err(1, 1054, "Unknown column 'nope'"));
    // The replies arrive split at awkward places.
    let (a, b) = replies.split_at(17);
    pieces.push(s(a.to_vec()));
    pieces.push(s(b.to_vec()));
    let x = exchanges(&run(&mut MysqlSession::new(false), &pieces, true));
    assert_eq!(x.len(), 3);
    assert_eq!(x[0].rows, Some(2));
    assert_eq!(x[1].operation.as_deref(), Some("DELETE"));
    assert_eq!(x[1].rows, Some(1));
    assert_eq!(
        x[2].error.as_ref().map(|e| (e.code.as_str(), e.message.as_str())),
        Some(("1054", "Unknown column 'nope'"))
    );
    assert!(x.iter().all(|x| x.failure.is_none()));
}

#[test]
fn errors_keep_code_and_message() {
    let mut pieces = login();
    pieces.push(c(query("SELECT * FROM missing")));
    pieces.push(s(err(1, 1146, "Table 'shop.missing' doesn't exist")));
    let x = exchanges(&run(&mut MysqlSession::new(false), &pieces, true));
    let e = x[0].error.as_ref().unwrap();
    assert_eq!(e.code, "1146");
    assert_eq!(e.message, "Table 'shop.missing' doesn't exist");
    assert_eq!(x[0].rows, None);
}

#[test]
fn close_flushes_commands_in_flight() {
    let mut pieces = login();
    pieces.push(c(query("SELECT SLEEP(10)")));
    pieces.push(c(pkt(0, b"\x0e")));
    let mut session = MysqlSession::new(false);
    let mut events = run(&mut session, &pieces, false);
    events.extend(session.on_close(777, true));
    check_events(&events, true);
    let x = exchanges(&events);
    assert_eq!(x.len(), 2);
    assert!(x.iter().all(|x| x.failure == Some(DbFailure::ConnectionReset) && x.closed_ns == Some(777)));
    assert_eq!(x[1].operation.as_deref(), Some("PING"));
    // Nothing more after the close.
    assert!(send(&mut session, false, &ok(1, 0, 2), 800).is_empty());
}

#[test]
fn quit_and_statement_close_have_no_exchange() {
    let mut pieces = login();
    pieces.push(c(pkt(0, &[0x19, 1, 0, 0, 0])));
    pieces.push(c(pkt(0, &[0x01])));
    let events = run(&mut MysqlSession::new(false), &pieces, true);
    assert!(events.is_empty());
}

#[test]
fn auth_switch_and_full_auth_are_not_kept() {
    let secret = b"hunter2-Very-Secret";
    let mut pieces = vec![
        s(greeting()),
        c(handshake_response(BASE_CAPS | (1 << 24), "bob", secret, None)),
        s(pkt(2, b"\xfemysql_native_password\0abcdefghijklmnopqrst\0")),
        c(pkt(3, secret)),
        s(pkt(4, b"\x01\x04")),
        c(pkt(5, b"\x02")),
        s(pkt(6, b"\x01-----BEGIN PUBLIC KEY-----\n...")),
    ];
    // The encrypted password arrives in two pieces so it is buffered.
    let mut enc = pkt(7, &[secret.as_slice(), secret.as_slice()].concat());
    let tail = enc.split_off(12);
    pieces.push(c(enc));
    pieces.push(c(tail));
    pieces.push(s(ok(8, 0, 2)));
    pieces.push(c(query("SELECT 1")));
    let mut rs = pkt(1, &[1]);
    rs.extend(column_def(2));
    rs.extend(row(3, "1"));
    rs.extend(pkt(4, &[0xfe, 0, 0, 2, 0, 0, 0]));
    pieces.push(s(rs));
    let mut session = MysqlSession::new(false);
    let x = exchanges(&run(&mut session, &pieces, true));
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].user.as_deref(), Some("bob"));
    assert_eq!(x[0].namespace, None);
    assert_eq!(x[0].rows, Some(1), "CLIENT_DEPRECATE_EOF result set");
    let dump = format!("{session:?}{x:?}");
    assert!(!dump.contains("hunter2"));
    let as_numbers = format!("{:?}", &secret[..6]);
    assert!(!dump.contains(&as_numbers[1..as_numbers.len() - 1]));
}

#[test]
fn ssl_request_and_compression_break_the_session() {
    let mut ssl = (BASE_CAPS | 0x800).to_le_bytes().to_vec();
    ssl.extend_from_slice(&[0, 0, 0, 1, 45]);
    ssl.extend_from_slice(&[0; 23]);
    let mut session = MysqlSession::new(false);
    run(&mut session, &[s(greeting()), c(pkt(1, &ssl))], false);
    assert!(session.is_broken());
    assert!(send(&mut session, true, b"\x16\x03\x01\x02\x00", 100).is_empty());

    let mut session = MysqlSession::new(false);
    run(&mut session, &[s(greeting()), c(handshake_response(BASE_CAPS | 0x20, "u", b"x", None))], false);
    assert!(session.is_broken());
}

#[test]
fn refused_greeting_and_client_first_streams() {
    let mut session = MysqlSession::new(false);
    let refused = pkt(0, b"\xff\x10\x04Too many connections");
    let events = run(&mut session, &[s(refused)], true);
    assert!(events.is_empty() && !session.is_broken());

    let mut session = MysqlSession::new(false);
    run(&mut session, &[c(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec())], false);
    assert!(session.is_broken());
}

#[test]
fn init_db_use_query_and_session_tracking_set_the_namespace() {
    let mut pieces = login();
    pieces.push(c(pkt(0, b"\x02other")));
    pieces.push(s(ok(1, 0, 2)));
    pieces.push(c(query("SELECT 1")));
    pieces.push(s(result_set(&["1"], 2)));
    pieces.push(c(query("use `we``ird`")));
    pieces.push(s(ok(1, 0, 2)));
    pieces.push(c(query("USE failing")));
    pieces.push(s(err(1, 1049, "Unknown database 'failing'")));
    pieces.push(c(query("SELECT 2")));
    pieces.push(s(result_set(&["2"], 2)));
    let x = exchanges(&run(&mut MysqlSession::new(false), &pieces, true));
    assert_eq!(x[0].operation.as_deref(), Some("USE"));
    assert_eq!(x[0].namespace.as_deref(), Some("other"));
    assert_eq!(x[1].namespace.as_deref(), Some("other"));
    assert_eq!(x[2].namespace.as_deref(), Some("we`ird"));
    assert_eq!(x[3].namespace.as_deref(), Some("we`ird"));
    assert_eq!(x[4].namespace.as_deref(), Some("we`ird"));
}

#[test]
fn prepared_statements_are_remembered_and_bounded() {
    let mut pieces = login();
    pieces.push(c(pkt(0, b"\x16SELECT c FROM t WHERE id = ?")));
    let mut prep = pkt(1, &[0, 7, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]);
    prep.extend(column_def(2));
    prep.extend(eof(3, 2));
    prep.extend(column_def(4));
    prep.extend(eof(5, 2));
    pieces.push(s(prep));
    let mut exec = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 8, 0];
    exec.extend_from_slice(&42u64.to_le_bytes());
    pieces.push(c(pkt(0, &exec)));
    let mut rs = pkt(1, &[1]);
    rs.extend(column_def(2));
    rs.extend(eof(3, 2));
    rs.extend(pkt(4, &[0, 0, 1, b'a']));
    rs.extend(pkt(5, &[0, 0, 1, b'b']));
    rs.extend(eof(6, 2));
    pieces.push(s(rs));
    pieces.push(c(pkt(0, &[0x17, 9, 0, 0, 0, 0, 1, 0, 0, 0])));
    pieces.push(s(ok(1, 0, 2)));
    let mut session = MysqlSession::new(false);
    let x = exchanges(&run(&mut session, &pieces, false));
    assert_eq!(x[0].operation.as_deref(), Some("PREPARE"));
    assert_eq!(x[0].collection.as_deref(), Some("t"));
    assert_eq!(x[1].operation.as_deref(), Some("SELECT"));
    assert_eq!(x[1].collection.as_deref(), Some("t"));
    assert_eq!(x[1].query_text, x[0].query_text);
    assert_eq!(x[1].rows, Some(2));
    assert_eq!(x[2].operation.as_deref(), Some("EXECUTE"), "unknown statement id");
    assert_eq!(x[2].query_text, None);
    assert_eq!(session.statement_count(), 1);

    for id in 100..400u32 {
        let mut p = vec![0u8];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        send(&mut session, true, &pkt(0, b"\x16DO 1"), 1000);
        send(&mut session, false, &pkt(1, &p), 1001);
    }
    assert_eq!(session.statement_count(), 256);
    send(&mut session, true, &pkt(0, &[0x19, 0x8f, 1, 0, 0]), 2000);
    assert_eq!(session.statement_count(), 255);
}

#[test]
fn in_flight_queue_is_bounded() {
    let mut session = MysqlSession::new(false);
    run(&mut session, &login(), false);
    let mut events = Vec::new();
    for i in 0..1100u64 {
        events.extend(send(&mut session, true, &pkt(0, b"\x0e"), 100 + i));
    }
    let x = exchanges(&events);
    assert_eq!(x.len(), 1100 - crate::protocol::db::MAX_IN_FLIGHT);
    assert!(x.iter().all(|x| x.failure == Some(DbFailure::Truncated)));
    events.extend(session.on_close(5000, false));
    check_events(&events, true);
}

#[test]
fn local_infile_upload_is_skipped() {
    let mut pieces = login();
    pieces.push(c(query("LOAD DATA LOCAL INFILE '/tmp/f' INTO TABLE t")));
    pieces.push(s(pkt(1, b"\xfb/tmp/f")));
    // File content that would look like commands if parsed as such.
    pieces.push(c([pkt(2, b"\x03SELECT secret"), pkt(3, b"\x0e"), pkt(4, b"")].concat()));
    pieces.push(s(pkt(5, b"\xff\xff\xff\x01\x02\x02\x00\x00\x00\x0fEnd bulk insert")));
    pieces.push(s(ok(6, 2, 2)));
    pieces.push(c(pkt(0, b"\x0e")));
    pieces.push(s(ok(1, 0, 2)));
    let x = exchanges(&run(&mut MysqlSession::new(false), &pieces, true));
    assert_eq!(x.len(), 2);
    assert_eq!(x[0].rows, Some(2));
    assert_eq!(x[0].error, None, "progress report is not an error");
    assert_eq!(x[1].operation.as_deref(), Some("PING"));
}

#[test]
fn multi_results_belong_to_one_command() {
    let mut pieces = login();
    pieces.push(c(query("SELECT 1; UPDATE t SET c = 1; SELECT 2")));
    let mut r = result_set(&["1"], 0x000a);
    r.extend(ok(6, 4, 0x000a));
    // Sequence ids continue in a real reply; the parser does not need them to.
    r.extend(result_set(&["2", "3"], 2));
    pieces.push(s(r));
    pieces.push(c(query("SELECT 3")));
    pieces.push(s(err(1, 1317, "Query execution was interrupted")));
    let x = exchanges(&run(&mut MysqlSession::new(false), &pieces, true));
    assert_eq!(x.len(), 2);
    assert_eq!(x[0].rows, Some(1 + 4 + 2));
    assert_eq!(x[1].error.as_ref().unwrap().code, "1317");
}

#[test]
fn reply_of_an_unknown_command_is_not_misattributed() {
    // A reply whose first sequence id is not the command's + 1 belongs to
    // something the parser did not see.
    let mut pieces = login();
    pieces.push(c(query("SELECT 1")));
    pieces.push(s(ok(5, 9, 2)));
    pieces.push(s(ok(1, 1, 2)));
    let x = exchanges(&run(&mut MysqlSession::new(false), &pieces, true));
    assert_eq!(x[0].rows, Some(1));
}

#[test]
fn query_attributes_are_skipped() {
    let caps = BASE_CAPS | (1 << 27);
    let mut greet = greeting();
    // Advertise query attributes in the server's upper capability bytes.
    let upper_at = 4 + 1 + 7 + 4 + 9 + 2 + 1 + 2;
    greet[upper_at + 1] |= 0x08;
    let mut pieces = vec![s(greet), c(handshake_response(caps, "u", b"x", None)), s(ok(2, 0, 2))];
    pieces.push(c(pkt(0, b"\x03\x00\x01SELECT c FROM t")));
    pieces.push(s(ok(1, 0, 2)));
    // One string attribute named "a" with value "v".
    pieces.push(c(pkt(0, b"\x03\x01\x01\x00\x01\xfe\x00\x01a\x01vUPDATE t SET c = 1")));
    pieces.push(s(ok(1, 0, 2)));
    let x = exchanges(&run(&mut MysqlSession::new(false), &pieces, true));
    assert_eq!(x[0].operation.as_deref(), Some("SELECT"));
    assert_eq!(x[1].operation.as_deref(), Some("UPDATE"));
}

#[test]
fn change_user_updates_user_and_namespace() {
    let mut pieces = login();
    let mut p = b"\x11carol\0\x14".to_vec();
    p.extend_from_slice(b"01234567890123456789");
    p.extend_from_slice(b"sales\0");
    pieces.push(c(pkt(0, &p)));
    pieces.push(s(pkt(1, b"\xfemysql_native_password\0abcdefghijklmnopqrst\0")));
    pieces.push(c(pkt(2, b"01234567890123456789")));
    pieces.push(s(ok(3, 0, 2)));
    pieces.push(c(query("SELECT 1")));
    pieces.push(s(result_set(&["1"], 2)));
    let x = exchanges(&run(&mut MysqlSession::new(false), &pieces, true));
    assert_eq!(x.len(), 2);
    assert_eq!(x[0].operation.as_deref(), Some("CHANGE_USER"));
    assert_eq!((x[1].user.as_deref(), x[1].namespace.as_deref()), (Some("carol"), Some("sales")));
}

#[test]
fn detection() {
    assert!(looks_like_server_greeting(&greeting()));
    assert!(!looks_like_server_greeting(&greeting()[..9]), "version end not visible");
    let mut seq1 = greeting();
    seq1[3] = 1;
    assert!(!looks_like_server_greeting(&seq1));
    assert!(!looks_like_server_greeting(b"HTTP/1.1 200 OK\r\n"));
    assert!(!looks_like_server_greeting(b"\x10\x00\x00\x00\x0aabc"));
    assert!(!looks_like_server_greeting(b""));

    assert!(looks_like_client_command(&query("SELECT 1")));
    assert!(looks_like_client_command(&query("  /* x */ select 1")));
    assert!(looks_like_client_command(&pkt(0, b"\x03\x00\x01SELECT 1")));
    assert!(looks_like_client_command(&pkt(0, b"\x16INSERT INTO t VALUES (?)")));
    assert!(looks_like_client_command(&pkt(0, &[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0])));
    assert!(looks_like_client_command(&pkt(0, b"\x0e")));
    assert!(looks_like_client_command(&pkt(0, b"\x01")));
    assert!(looks_like_client_command(&pkt(0, b"\x02shop")));
    assert!(looks_like_client_command(&pkt(0, &[0x19, 1, 0, 0, 0])));
    assert!(!looks_like_client_command(&pkt(1, b"\x03SELECT 1")));
    assert!(!looks_like_client_command(&pkt(0, b"\x03\x01\x02\x03")));
    assert!(!looks_like_client_command(&pkt(0, b"\x0eextra")));
    assert!(!looks_like_client_command(&pkt(0, &[0x17, 1, 0, 0, 0, 0, 7, 0, 0, 0])));
    assert!(!looks_like_client_command(b"GET / HTTP/1.1\r\n"));
    assert!(!looks_like_client_command(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"));
    assert!(!looks_like_client_command(b"*1\r\n$4\r\nPING\r\n"));
    assert!(!looks_like_client_command(&[0, 0, 0, 0, 0x03]));
}

#[test]
fn reply_start_and_terminator_heuristics() {
    assert!(looks_like_reply_start(&ok(1, 0, 2), 1));
    assert!(!looks_like_reply_start(&ok(2, 0, 2), 1));
    assert!(looks_like_reply_start(&err(1, 1146, "x"), 1));
    assert!(looks_like_reply_start(&result_set(&["a"], 2), 1));
    let mut bad = pkt(1, &[1]);
    bad.extend(pkt(2, b"\x01abc"));
    assert!(!looks_like_reply_start(&bad, 1));
    assert!(!looks_like_reply_start(&row(1, "a long text value"), 1));
    assert!(ends_with_terminator(&result_set(&["a"], 2)));
    assert!(!ends_with_terminator(&result_set(&["a"], 0x000a)));
    assert!(ends_with_terminator(&pkt(9, &[0xfe, 0, 0, 2, 0, 0, 0])));
    assert!(!ends_with_terminator(&row(4, "abc")));
}
