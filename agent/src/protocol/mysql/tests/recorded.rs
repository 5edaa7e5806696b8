//! Conversations recorded from a real MariaDB 10.11 server (see
//! tests/recordings/mysql-*.rec): the `mariadb` CLI, a libmariadb C client
//! using the binary protocol, a raw client negotiating CLIENT_DEPRECATE_EOF
//! with a pipelined pair of queries, a 2000-row result set read in 64 KiB
//! pieces, and a CLI session switching to TLS.

use super::*;
use crate::protocol::recording;

const CLI: &[u8] = include_bytes!("../../../../../tests/recordings/mysql-cli.rec");
const CAPI: &[u8] = include_bytes!("../../../../../tests/recordings/mysql-capi.rec");
const DEPRECATE_EOF: &[u8] = include_bytes!("../../../../../tests/recordings/mysql-deprecate-eof.rec");
const LARGE: &[u8] = include_bytes!("../../../../../tests/recordings/mysql-large.rec");
const TLS: &[u8] = include_bytes!("../../../../../tests/recordings/mysql-tls.rec");

pub(in super::super) fn pieces(rec: &[u8]) -> Vec<Piece> {
    recording::parse(rec)
        .unwrap()
        .into_iter()
        .map(|p| Piece { from_client: p.from_client, data: p.data.to_vec(), size: p.data.len() as u64 })
        .collect()
}

/// (operation, rows, error code, namespace) of each exchange.
type Row<'a> = (Option<&'a str>, Option<u64>, Option<&'a str>, Option<&'a str>);

fn summary(x: &[DbExchange]) -> Vec<Row<'_>> {
    x.iter()
        .map(|x| (x.operation.as_deref(), x.rows, x.error.as_ref().map(|e| e.code.as_str()), x.namespace.as_deref()))
        .collect()
}

fn replay(rec: &[u8], mid_stream: bool) -> Vec<DbExchange> {
    exchanges(&run(&mut MysqlSession::new(mid_stream), &pieces(rec), true))
}

#[test]
fn cli_session() {
    let x = replay(CLI, false);
    let shop = Some("shop");
    let other = Some("other");
    assert_eq!(
        summary(&x),
        vec![
            (Some("CREATE"), Some(0), None, shop),
            (Some("INSERT"), Some(3), None, shop),
            (Some("SELECT"), Some(2), None, shop),
            (Some("SELECT"), None, Some("1146"), shop),
            (Some("UPDATE"), Some(1), None, shop),
            (Some("SELECT"), Some(0), None, shop),
            // The CLI's `use` asks for DATABASE() first, then sends COM_INIT_DB.
            (Some("SELECT"), Some(1), None, shop),
            (Some("USE"), None, None, other),
            (Some("SELECT"), Some(1), None, other),
            (Some("USE"), Some(0), None, shop),
            (Some("SELECT"), Some(1), None, shop),
            (Some("PREPARE"), Some(0), None, shop),
            (Some("SET"), Some(0), None, shop),
            (Some("EXECUTE"), Some(1), None, shop),
            (Some("DEALLOCATE"), Some(0), None, shop),
            (Some("LOAD"), Some(2), None, shop),
            // SELECT 1 (1 row); SELECT name, price (5 rows); UPDATE (1 affected).
            (Some("SELECT"), Some(7), None, shop),
            (Some("DROP"), Some(0), None, shop),
        ]
    );
    assert!(x.iter().all(|x| x.user.as_deref() == Some("app") && x.failure.is_none()));
    assert_eq!(x[1].collection.as_deref(), Some("items"));
    assert_eq!(x[2].collection.as_deref(), Some("items"));
    let insert = x[1].query_text.as_deref().unwrap();
    assert!(insert.starts_with("INSERT INTO items"), "{insert}");
    for literal in ["apple", "plum", "1.25", "2.50"] {
        assert!(!insert.contains(literal), "{insert}");
    }
    let e = x[3].error.as_ref().unwrap();
    assert_eq!(e.message, "Table 'shop.missing_table' doesn't exist");
    assert!(x.iter().all(|x| x.response_first.is_some() && x.response_last.is_some()));
}

#[test]
fn capi_binary_protocol_session() {
    let mut session = MysqlSession::new(false);
    let x = exchanges(&run(&mut session, &pieces(CAPI), true));
    let shop = Some("shop");
    assert_eq!(
        summary(&x),
        vec![
            (Some("CREATE"), Some(0), None, shop),
            (Some("PREPARE"), None, None, shop),
            (Some("INSERT"), Some(1), None, shop),
            (Some("INSERT"), Some(1), None, shop),
            (Some("INSERT"), Some(1), None, shop),
            (Some("PREPARE"), None, None, shop),
            (Some("SELECT"), Some(2), None, shop),
            (Some("STMT_RESET"), None, None, shop),
            (Some("PREPARE"), None, None, shop),
            // A read-only cursor: the execute opens it, fetches bring rows.
            (Some("SELECT"), Some(0), None, shop),
            (Some("FETCH"), Some(2), None, shop),
            (Some("FETCH"), Some(0), None, shop),
            (Some("STMT_RESET"), None, None, shop),
            (Some("PREPARE"), None, Some("1146"), shop),
            (Some("PING"), None, None, shop),
            (Some("STATISTICS"), None, None, shop),
            (Some("FIELD_LIST"), None, None, shop),
            (Some("USE"), None, None, Some("other")),
            (Some("SELECT"), Some(2), None, Some("other")),
            (Some("CHANGE_USER"), None, None, shop),
            (Some("RESET_CONNECTION"), None, None, shop),
            (Some("DROP"), Some(0), None, shop),
        ]
    );
    assert_eq!(x[2].collection.as_deref(), Some("items"));
    assert_eq!(x[2].query_text, x[1].query_text);
    assert_eq!(x[6].query_text, x[5].query_text);
    assert_eq!(x[10].collection.as_deref(), Some("items"));
    assert_eq!(x[16].collection.as_deref(), Some("items"));
    assert!(x.iter().all(|x| x.user.as_deref() == Some("app") && x.failure.is_none()));
    // Every statement was closed again.
    assert_eq!(session.statement_count(), 0);
}

#[test]
fn deprecate_eof_session() {
    let x = replay(DEPRECATE_EOF, false);
    let shop = Some("shop");
    let expected = vec![
        (Some("CREATE"), Some(0), None, shop),
        (Some("INSERT"), Some(3), None, shop),
        (Some("SELECT"), Some(3), None, shop),
        (Some("SELECT"), Some(0), None, shop),
        (Some("SELECT"), None, Some("1054"), shop),
        (Some("SELECT"), Some(3), None, shop),
        (Some("SELECT"), Some(1), None, shop),
        (Some("DELETE"), Some(1), None, shop),
        (Some("PREPARE"), None, None, shop),
        (Some("SELECT"), Some(2), None, shop),
        (Some("PREPARE"), None, None, shop),
        (Some("SELECT"), Some(1), None, shop),
        (Some("PING"), None, None, shop),
        (Some("DROP"), Some(0), None, shop),
    ];
    assert_eq!(summary(&x), expected);
    assert_eq!(x[9].collection.as_deref(), Some("t2"));

    // Joined after the handshake: the termination mode is learned.
    let later = pieces(DEPRECATE_EOF).split_off(3);
    let y = exchanges(&run(&mut MysqlSession::new(true), &later, true));
    let unnamed: Vec<_> = expected.iter().map(|&(o, r, e, _)| (o, r, e, None)).collect();
    assert_eq!(summary(&y), unnamed);
    assert!(y.iter().all(|y| y.failure.is_none() && y.user.is_none()));
}

/// Each recording, with one record cut in two at every possible place,
/// gives the same exchanges as the whole recording.
#[test]
fn every_split_point_gives_the_same_exchanges() {
    for rec in [CLI, CAPI, DEPRECATE_EOF] {
        let all = pieces(rec);
        let reference = replay(rec, false);
        for i in 0..all.len() {
            for k in 1..all[i].data.len() {
                let mut session = MysqlSession::new(false);
                let mut events = Vec::new();
                for (j, p) in all.iter().enumerate() {
                    let t = 10 * j as u64;
                    if j == i {
                        let (a, b) = p.data.split_at(k);
                        events.extend(feed(&mut session, p.from_client, a, a.len() as u64, t));
                        events.extend(feed(&mut session, p.from_client, b, b.len() as u64, t));
                    } else {
                        events.extend(feed(&mut session, p.from_client, &p.data, p.size, t));
                    }
                }
                events.extend(session.on_close(1_000_000, false));
                check_events(&events, true);
                assert_eq!(exchanges(&events), reference, "record {i} cut at {k}");
            }
        }
    }
}

#[test]
fn byte_at_a_time_gives_the_same_exchanges() {
    for rec in [CLI, CAPI, DEPRECATE_EOF, LARGE] {
        let reference = replay(rec, false);
        let mut session = MysqlSession::new(false);
        let mut events = Vec::new();
        for (j, p) in pieces(rec).iter().enumerate() {
            for b in p.data.chunks(1) {
                events.extend(feed(&mut session, p.from_client, b, 1, 10 * j as u64));
            }
        }
        events.extend(session.on_close(1_000_000, false));
        check_events(&events, true);
        assert_eq!(exchanges(&events), reference);
    }
}

/// Joined in the middle of a command: it is skipped, the next one is found.
#[test]
fn mid_stream_start_inside_a_message() {
    let all = pieces(CLI);
    // Record 3 is the CREATE TABLE query: start 10 bytes into it.
    assert!(all[3].from_client);
    let mut later = all[3..].to_vec();
    later[0].data.drain(..10);
    later[0].size = later[0].data.len() as u64;
    let mut session = MysqlSession::new(true);
    let x = exchanges(&run(&mut session, &later, true));
    let reference = replay(CLI, false);
    fn ops(x: &[DbExchange]) -> Vec<(Option<&str>, Option<u64>, Option<&str>)> {
        summary(x).into_iter().map(|(o, r, e, _)| (o, r, e)).collect()
    }
    assert_eq!(ops(&x), ops(&reference[1..]));
    assert_eq!(x[0].namespace, None);
    // COM_INIT_DB names the schema even without the handshake.
    assert_eq!(x[6].namespace.as_deref(), Some("other"));
    assert!(!session.is_broken());

    // Joined inside a result set (record 8 is the reply to the first SELECT).
    assert!(!all[8].from_client && all[8].data.len() == 140);
    let mut later = all[8..].to_vec();
    later[0].data.drain(..20);
    later[0].size = later[0].data.len() as u64;
    let x = exchanges(&run(&mut MysqlSession::new(true), &later, true));
    assert_eq!(ops(&x), ops(&reference[3..]));
}

/// Started mid-stream but the connection is in fact new: the greeting is
/// recognised and the handshake fields are read.
#[test]
fn mid_stream_session_recognises_a_greeting() {
    let x = replay(CLI, true);
    assert_eq!(x, replay(CLI, false));
}

#[test]
fn large_result_set_whole_and_with_a_4_kib_capture() {
    let all = pieces(LARGE);
    let full = exchanges(&run(&mut MysqlSession::new(false), &all, true));
    let expected = vec![
        (Some("SELECT"), Some(2000), None, Some("shop")),
        (Some("SELECT"), Some(1), None, Some("shop")),
        (Some("SELECT"), None, Some("1146"), Some("shop")),
        (Some("SELECT"), Some(1), None, Some("shop")),
    ];
    assert_eq!(summary(&full), expected);
    assert!(full.iter().all(|x| x.failure.is_none()));

    // The kernel side copies at most 4 KiB of each syscall.
    let capped: Vec<Piece> = all
        .iter()
        .map(|p| Piece { from_client: p.from_client, data: p.data[..p.data.len().min(4096)].to_vec(), size: p.size })
        .collect();
    let big = capped.iter().position(|p| p.size > 4096).unwrap();
    let x = exchanges(&run(&mut MysqlSession::new(false), &capped, true));
    assert_eq!(x.len(), 4);
    assert_eq!(x[0].failure, Some(DbFailure::Truncated));
    assert!(x[0].rows.is_some_and(|r| r > 0 && r < 2000), "{:?}", x[0].rows);
    // The reply's last read ends with the terminator: the end time is exact.
    assert_eq!(x[0].response_last, full[0].response_last);
    assert!(x[0].response_last.unwrap().enter_ns > 10 * big as u64);
    assert_eq!(x[1..], full[1..]);
}

#[test]
fn tls_session_is_not_decoded() {
    let mut session = MysqlSession::new(false);
    let events = run(&mut session, &pieces(TLS), true);
    assert!(events.is_empty());
    assert!(session.is_broken());
}
