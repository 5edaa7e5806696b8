//! Commands paired with their results: simple and extended protocol,
//! pipelines, errors, asynchronous messages, COPY.

use super::*;
use crate::protocol::db::{DbError, DbEvent, DbFailure};

fn err(code: &str, message: &str) -> Option<DbError> {
    Some(DbError { code: code.into(), message: message.into() })
}

#[test]
fn simple_query_pairs_at_ready_for_query() {
    let mut d = Driver::connected();
    let q = d.client(&query("SELECT id, name FROM public.users WHERE name = 'bob' AND id > 10"));
    assert_eq!(d.events.last(), Some(&DbEvent::Started { seq: 0, first: Driver::ts(q) }));
    let r1 = d.server(&cat(&[row_description(&["id", "name"]), data_row(&[b"11", b"bob"])]));
    d.server(&data_row(&[b"12", b"bob"]));
    assert!(d.exchanges().is_empty(), "not done before ReadyForQuery");
    let r3 = d.server(&cat(&[complete("SELECT 2"), ready()]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 1);
    let x = &xs[0];
    assert_eq!(x.seq, 0);
    assert_eq!(x.operation.as_deref(), Some("SELECT"));
    assert_eq!(x.collection.as_deref(), Some("public.users"));
    assert_eq!(x.query_text.as_deref(), Some("SELECT id, name FROM public.users WHERE name = ? AND id > ?"));
    assert_eq!(x.namespace.as_deref(), Some("shop"));
    assert_eq!(x.user.as_deref(), Some("app"));
    assert_eq!(x.rows, Some(2));
    assert_eq!((x.error.clone(), x.failure), (None, None));
    assert_eq!(x.batch_size, 1);
    assert_eq!((x.request_first, x.request_last), (Driver::ts(q), Driver::ts(q)));
    assert_eq!((x.response_first, x.response_last), (Some(Driver::ts(r1)), Some(Driver::ts(r3))));
}

#[test]
fn namespace_defaults_to_the_user() {
    let mut d = Driver::new(false);
    d.client(&startup("alice", None));
    d.server(&server_hello());
    d.client(&query("BEGIN"));
    d.server(&cat(&[complete("BEGIN"), msg(b'Z', b"T")]));
    let x = &d.exchanges()[0];
    assert_eq!((x.user.as_deref(), x.namespace.as_deref()), (Some("alice"), Some("alice")));
    assert_eq!((x.operation.as_deref(), x.rows), (Some("BEGIN"), None));
}

#[test]
fn multi_statement_query_is_one_exchange() {
    let mut d = Driver::connected();
    d.client(&query("BEGIN; INSERT INTO t VALUES (1), (2); DELETE FROM t WHERE a = 3; COMMIT"));
    d.server(&cat(&[complete("BEGIN"), complete("INSERT 0 2"), complete("DELETE 1"), complete("COMMIT"), ready()]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 1);
    assert_eq!(xs[0].operation.as_deref(), Some("BEGIN"));
    assert_eq!(xs[0].rows, Some(3), "rows of all statements");
}

#[test]
fn error_in_simple_query() {
    let mut d = Driver::connected();
    d.client(&query("SELECT * FROM missing"));
    d.server(&cat(&[error_response("42P01", "relation \"missing\" does not exist"), ready()]));
    d.client(&query("SELECT 1; SELECT * FROM nope; SELECT 2"));
    d.server(&cat(&[
        row_description(&["x"]),
        data_row(&[b"1"]),
        complete("SELECT 1"),
        error_response("42P01", "first"),
        ready(),
    ]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!(xs[0].error, err("42P01", "relation \"missing\" does not exist"));
    assert_eq!((xs[0].rows, xs[0].failure), (None, None));
    assert_eq!(xs[0].collection.as_deref(), Some("missing"));
    assert_eq!(xs[1].error, err("42P01", "first"));
    assert_eq!(xs[1].rows, Some(1));
}

#[test]
fn long_error_message_is_cut() {
    let mut d = Driver::connected();
    d.client(&query("SELECT boom()"));
    let long = "é".repeat(400);
    d.server(&cat(&[error_response("P0001", &long), ready()]));
    let e = d.exchanges()[0].error.clone().unwrap();
    assert_eq!(e.code, "P0001");
    assert!(e.message.len() <= crate::protocol::db::MAX_ERROR_MESSAGE && e.message.starts_with("éé"));
}

#[test]
fn empty_query() {
    let mut d = Driver::connected();
    d.client(&query("  -- nothing\n"));
    d.server(&cat(&[msg(b'I', b""), ready()]));
    let x = &d.exchanges()[0];
    assert_eq!((x.operation.clone(), x.query_text.clone(), x.rows), (None, None, None));
}

#[test]
fn pipelined_simple_queries_pair_in_order() {
    let mut d = Driver::connected();
    d.client(&cat(&[query("SELECT 1"), query("UPDATE t SET a = 1"), query("DELETE FROM u")]));
    assert_eq!(d.started(), 3);
    d.server(&cat(&[row_description(&["a"]), data_row(&[b"1"]), complete("SELECT 1"), ready(), complete("UPDATE 7")]));
    d.server(&cat(&[ready(), complete("DELETE 0"), ready()]));
    let xs = d.exchanges();
    let got: Vec<_> = xs.iter().map(|x| (x.seq, x.operation.clone().unwrap(), x.rows)).collect();
    assert_eq!(got, [(0, "SELECT".into(), Some(1)), (1, "UPDATE".into(), Some(7)), (2, "DELETE".into(), Some(0))]);
}

#[test]
fn extended_unnamed_statement() {
    let mut d = Driver::connected();
    let c = d.client(&cat(&[
        parse("", "SELECT * FROM orders WHERE id = $1"),
        bind("", "", &[b"42"]),
        describe_portal(""),
        execute("", 0),
        sync(),
    ]));
    assert_eq!(d.started(), 1);
    let s1 = d.server(&cat(&[msg(b'1', b""), msg(b'2', b""), row_description(&["id"])]));
    let s2 = d.server(&cat(&[data_row(&[b"42"]), complete("SELECT 1")]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 1, "an Execute ends at CommandComplete");
    d.server(&ready());
    assert_eq!(d.exchanges().len(), 1);
    let x = &xs[0];
    assert_eq!(x.operation.as_deref(), Some("SELECT"));
    assert_eq!(x.collection.as_deref(), Some("orders"));
    assert_eq!(x.query_text.as_deref(), Some("SELECT * FROM orders WHERE id = $1"));
    assert_eq!(x.rows, Some(1));
    assert_eq!((x.request_first, x.request_last), (Driver::ts(c), Driver::ts(c)));
    assert_eq!((x.response_first, x.response_last), (Some(Driver::ts(s1)), Some(Driver::ts(s2))));
}

#[test]
fn prepared_statement_is_reused_by_name() {
    let mut d = Driver::connected();
    d.client(&cat(&[parse("s1", "UPDATE accounts SET balance = balance + $1 WHERE id = $2"), sync()]));
    d.server(&cat(&[msg(b'1', b""), ready()]));
    assert!(d.exchanges().is_empty(), "a prepare alone is no exchange");
    for i in 0..3u8 {
        let b = d.client(&cat(&[bind("", "s1", &[b"5", &[b'0' + i]]), execute("", 0), sync()]));
        d.server(&cat(&[msg(b'2', b""), complete("UPDATE 1"), ready()]));
        let x = d.exchanges().pop().unwrap();
        assert_eq!(x.seq, u64::from(i));
        assert_eq!(x.request_first, Driver::ts(b), "starts at Bind");
        assert_eq!(x.operation.as_deref(), Some("UPDATE"));
        assert_eq!(x.collection.as_deref(), Some("accounts"));
        assert_eq!(x.rows, Some(1));
    }
    // Closed: later Executes of that name are unknown.
    d.client(&cat(&[close_statement("s1"), bind("", "s1", &[]), execute("", 0), sync()]));
    d.server(&cat(&[msg(b'3', b""), error_response("26000", "prepared statement \"s1\" does not exist"), ready()]));
    let x = d.exchanges().pop().unwrap();
    assert_eq!((x.operation, x.query_text), (None, None));
    assert_eq!(x.error.unwrap().code, "26000");
}

#[test]
fn pipeline_with_error_fails_the_rest_of_the_batch() {
    let mut d = Driver::connected();
    d.client(&cat(&[
        parse("", "INSERT INTO a VALUES (1)"),
        bind("", "", &[]),
        execute("", 0),
        parse("", "INSERT INTO b VALUES (1)"),
        bind("", "", &[]),
        execute("", 0),
        parse("", "INSERT INTO c VALUES (1)"),
        bind("", "", &[]),
        execute("", 0),
        parse("", "INSERT INTO d VALUES (1)"),
        bind("", "", &[]),
        execute("", 0),
        sync(),
        query("SELECT 1"),
    ]));
    assert_eq!(d.started(), 5);
    d.server(&cat(&[msg(b'1', b""), msg(b'2', b""), complete("INSERT 0 1")]));
    assert_eq!(d.exchanges().len(), 1);
    d.server(&cat(&[msg(b'1', b""), msg(b'2', b""), error_response("23505", "duplicate key")]));
    assert_eq!(d.exchanges().len(), 4, "the failed Execute and those the server skips");
    d.server(&cat(&[ready(), row_description(&["x"]), data_row(&[b"1"]), complete("SELECT 1"), ready()]));
    let xs = d.exchanges();
    let got: Vec<_> =
        xs.iter().map(|x| (x.collection.clone(), x.error.as_ref().map(|e| e.code.clone()), x.rows)).collect();
    assert_eq!(
        got,
        [
            (Some("a".into()), None, Some(1)),
            (Some("b".into()), Some("23505".into()), None),
            (Some("c".into()), Some("23505".into()), None),
            (Some("d".into()), Some("23505".into()), None),
            (None, None, Some(1)),
        ]
    );
    assert!(xs.iter().all(|x| x.failure.is_none()));
}

#[test]
fn executes_sent_after_an_error_before_sync_fail_too() {
    let mut d = Driver::connected();
    d.client(&cat(&[parse("", "SELECT 1/0"), bind("", "", &[]), execute("", 0), msg(b'H', b"")]));
    d.server(&cat(&[msg(b'1', b""), msg(b'2', b""), error_response("22012", "division by zero")]));
    d.client(&cat(&[parse("", "SELECT 2"), bind("", "", &[]), execute("", 0), sync()]));
    d.server(&ready());
    d.client(&cat(&[parse("", "SELECT 3"), bind("", "", &[]), execute("", 0), sync()]));
    d.server(&cat(&[msg(b'1', b""), msg(b'2', b""), data_row(&[b"3"]), complete("SELECT 1"), ready()]));
    let codes: Vec<_> = d.exchanges().iter().map(|x| x.error.as_ref().map(|e| e.code.clone())).collect();
    assert_eq!(codes, [Some("22012".into()), Some("22012".into()), None]);
}

#[test]
fn error_in_a_prepare_only_batch_touches_no_exchange() {
    let mut d = Driver::connected();
    d.client(&cat(&[parse("bad", "SELEC 1"), sync(), bind("", "", &[]), execute("", 0), sync()]));
    d.server(&cat(&[error_response("42601", "syntax error"), ready()]));
    assert!(d.exchanges().is_empty());
    d.server(&cat(&[error_response("26000", "unnamed prepared statement does not exist"), ready()]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 1);
    assert_eq!(xs[0].error.as_ref().unwrap().code, "26000");
}

#[test]
fn asynchronous_messages_do_not_disturb_pairing() {
    let mut d = Driver::connected();
    d.client(&query("LISTEN jobs"));
    d.client(&query("SELECT * FROM jobs"));
    d.server(&cat(&[
        notice("hello"),
        complete("LISTEN"),
        parameter_status("TimeZone", "UTC"),
        ready(),
        notification("jobs", "payload"),
        row_description(&["a"]),
        notice("mid-result"),
        data_row(&[b"x"]),
        notification("jobs", "more"),
        complete("SELECT 1"),
        ready(),
        notification("jobs", "idle"),
        notice("idle notice"),
    ]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!((xs[0].operation.as_deref(), xs[0].rows), (Some("LISTEN"), None));
    assert_eq!((xs[1].operation.as_deref(), xs[1].rows), (Some("SELECT"), Some(1)));
    assert_eq!(d.session.in_flight(), 0);
}

#[test]
fn copy_in_is_one_exchange_and_its_data_is_skipped() {
    let mut d = Driver::connected();
    d.client(&query("COPY items (name, price) FROM STDIN"));
    d.server(&msg(b'G', &[0, 0, 2, 0, 0, 0, 0]));
    d.client(&msg(b'd', b"secret-row\t1\n"));
    d.client(&cat(&[msg(b'd', b"another\t2\n"), msg(b'c', b"")]));
    d.server(&cat(&[complete("COPY 2"), ready()]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 1);
    assert_eq!(
        (xs[0].operation.as_deref(), xs[0].collection.as_deref(), xs[0].rows),
        (Some("COPY"), Some("items"), Some(2))
    );
    assert!(!format!("{:?}", d.events).contains("secret-row"));
}

#[test]
fn copy_out_is_one_exchange() {
    let mut d = Driver::connected();
    d.client(&query("COPY items TO STDOUT"));
    d.server(&cat(&[msg(b'H', &[0, 0, 1, 0, 0]), msg(b'd', b"1\tx\n"), msg(b'd', b"2\ty\n")]));
    d.server(&cat(&[msg(b'c', b""), complete("COPY 2"), ready()]));
    let xs = d.exchanges();
    assert_eq!((xs.len(), xs[0].rows), (1, Some(2)));
}

#[test]
fn portal_suspended_ends_an_execute() {
    let mut d = Driver::connected();
    d.client(&cat(&[parse("", "SELECT * FROM big"), bind("c1", "", &[]), execute("c1", 2), msg(b'H', b"")]));
    d.server(&cat(&[msg(b'1', b""), msg(b'2', b""), data_row(&[b"1"]), data_row(&[b"2"]), msg(b's', b"")]));
    d.client(&cat(&[execute("c1", 2), sync()]));
    d.server(&cat(&[data_row(&[b"3"]), complete("SELECT 1"), ready()]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 2);
    assert_eq!((xs[0].rows, xs[1].rows), (Some(2), Some(1)));
    assert!(xs.iter().all(|x| x.collection.as_deref() == Some("big")), "named portal resolved");
}

#[test]
fn rows_counted_from_data_rows_when_the_tag_has_no_count() {
    let mut d = Driver::connected();
    d.client(&query("SHOW search_path"));
    d.server(&cat(&[row_description(&["search_path"]), data_row(&[b"public"]), complete("SHOW"), ready()]));
    assert_eq!(d.exchanges()[0].rows, Some(1));
}

#[test]
fn function_calls_are_no_exchange_and_do_not_shift_pairing() {
    let mut d = Driver::connected();
    let mut f = 1234i32.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    d.client(&cat(&[msg(b'F', &f), query("SELECT 1")]));
    d.server(&cat(&[msg(b'V', &[0, 0, 0, 1, 7]), ready()]));
    d.server(&cat(&[complete("SELECT 1"), ready()]));
    let xs = d.exchanges();
    assert_eq!(xs.len(), 1);
    assert_eq!((xs[0].operation.as_deref(), xs[0].rows), (Some("SELECT"), Some(1)));
}

#[test]
fn close_reports_commands_in_flight() {
    for (reset, failure) in [(false, DbFailure::ConnectionClosed), (true, DbFailure::ConnectionReset)] {
        let mut d = Driver::connected();
        d.client(&cat(&[query("SELECT 1"), query("SELECT 2")]));
        d.client(&cat(&[parse("", "SELECT 3"), bind("", "", &[]), execute("", 0), sync()]));
        d.server(&cat(&[complete("SELECT 1"), ready()]));
        d.close(reset);
        d.close(reset);
        let xs = d.exchanges();
        assert_eq!(xs.len(), 3);
        assert_eq!(xs[0].failure, None);
        assert!(xs[1..].iter().all(|x| x.failure == Some(failure) && x.closed_ns.is_some()));
        assert_eq!(xs[2].operation.as_deref(), Some("SELECT"));
        // Nothing after close.
        assert!(
            d.session
                .on_client_bytes(&Chunk { data: &query("SELECT 4"), size: 14, enter_ns: 0, exit_ns: 0 })
                .is_empty()
        );
    }
}

#[test]
fn terminate_ends_the_session_cleanly() {
    let mut d = Driver::connected();
    d.client(&query("SELECT 1"));
    d.server(&cat(&[complete("SELECT 1"), ready()]));
    d.client(&msg(b'X', b""));
    d.close(false);
    assert_eq!(d.exchanges().len(), 1);
    assert!(!d.session.is_broken());
}
