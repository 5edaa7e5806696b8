//! Connection state: SELECT, MULTI, Pub/Sub, pushes, MONITOR, CLIENT REPLY, replication.

use super::*;

#[test]
fn select_sets_the_namespace() {
    let mut d = Driver::new();
    d.client(&cmd(&["GET", "a"])).server(b"$-1\r\n");
    d.client(&cmd(&["SELECT", "1"])).server(b"+OK\r\n");
    d.client(&cmd(&["GET", "a"])).server(b"$-1\r\n");
    d.client(&cmd(&["SELECT", "99"])).server(b"-ERR DB index is out of range\r\n");
    d.client(&cmd(&["GET", "a"])).server(b"$-1\r\n");
    // Pipelined: the commands after SELECT run in the new database.
    d.client(&[cmd(&["SELECT", "2"]), cmd(&["GET", "a"])].concat()).server(b"+OK\r\n$-1\r\n");
    d.client(&cmd(&["RESET"])).server(b"+RESET\r\n");
    let ns: Vec<_> = d.exchanges().iter().map(|x| x.namespace.clone().unwrap()).collect();
    assert_eq!(ns, ["0", "1", "1", "1", "1", "2", "2", "0"]);
}

#[test]
fn multi_exec_is_one_exchange_per_command() {
    let mut d = Driver::new();
    d.client(&cmd(&["MULTI"])).server(b"+OK\r\n");
    d.client(&cmd(&["SET", "a", "1"])).server(b"+QUEUED\r\n");
    d.client(&cmd(&["INCR", "a"])).server(b"+QUEUED\r\n");
    d.client(&cmd(&["EXEC"])).server(b"*2\r\n+OK\r\n:2\r\n");
    d.client(&cmd(&["MULTI"])).server(b"+OK\r\n");
    d.client(&cmd(&["NOPE"])).server(b"-ERR unknown command 'NOPE'\r\n");
    d.client(&cmd(&["EXEC"])).server(b"-EXECABORT Transaction discarded because of previous errors.\r\n");
    let x = d.exchanges();
    assert_eq!(d.ops(), ["MULTI", "SET", "INCR", "EXEC", "MULTI", "NOPE", "EXEC"]);
    assert_eq!(x[3].rows, Some(2));
    assert!(x[3].error.is_none());
    assert_eq!(x[6].error.as_ref().unwrap().code, "EXECABORT");
}

#[test]
fn pushes_are_out_of_band() {
    let mut d = Driver::new();
    d.client(&cmd(&["GET", "a"]));
    d.server(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n");
    assert_eq!(d.exchanges().len(), 0, "a push is no reply");
    d.server(b"$1\r\n1\r\n");
    d.client(&cmd(&["GET", "b"]));
    // A push in the middle of nothing, then the reply.
    d.server(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n$1\r\n2\r\n");
    let x = d.exchanges();
    assert_eq!(x.len(), 2);
    assert_eq!(x[1].query_text.as_deref(), Some("GET b"));
}

#[test]
fn pubsub_resp2() {
    let mut d = Driver::new();
    d.client(&cmd(&["SUBSCRIBE", "news", "sports"]));
    d.server(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    d.server(b"*3\r\n$9\r\nsubscribe\r\n$6\r\nsports\r\n:2\r\n");
    d.server(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n");
    d.client(&cmd(&["PSUBSCRIBE", "a*"]));
    d.server(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nagain\r\n");
    d.server(b"*3\r\n$10\r\npsubscribe\r\n$2\r\na*\r\n:3\r\n");
    d.server(b"*4\r\n$8\r\npmessage\r\n$2\r\na*\r\n$2\r\nab\r\n$1\r\nx\r\n");
    d.client(&cmd(&["PING"]));
    d.server(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    d.client(&cmd(&["UNSUBSCRIBE"]));
    d.server(b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$6\r\nsports\r\n:1\r\n");
    d.client(&cmd(&["PUNSUBSCRIBE"]));
    d.server(b"*3\r\n$12\r\npunsubscribe\r\n$2\r\na*\r\n:0\r\n");
    // Out of subscribed mode, a three-element array starting "message" is a reply.
    d.client(&cmd(&["LRANGE", "l", "0", "-1"]));
    d.server(b"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$1\r\nc\r\n");
    assert_eq!(d.ops(), ["SUBSCRIBE", "PSUBSCRIBE", "PING", "UNSUBSCRIBE", "PUNSUBSCRIBE", "LRANGE"]);
    let x = d.exchanges();
    assert_eq!(x[0].query_text.as_deref(), Some("SUBSCRIBE news sports"));
    assert_eq!(x[0].rows, None);
    assert_eq!(x[5].rows, Some(3));
}

#[test]
fn pubsub_resp3() {
    let mut d = Driver::new();
    d.client(&cmd(&["SUBSCRIBE", "a", "b"]));
    d.server(b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n");
    d.server(b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nz\r\n");
    d.client(&cmd(&["GET", "k"]));
    d.server(b">3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$1\r\nz\r\n$1\r\nv\r\n");
    d.client(&cmd(&["LRANGE", "l", "0", "-1"]));
    d.server(b"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$1\r\nc\r\n");
    assert_eq!(d.ops(), ["SUBSCRIBE", "GET", "LRANGE"]);
    assert_eq!(d.exchanges()[2].rows, Some(3));
}

#[test]
fn monitor_feed_is_not_a_reply() {
    let mut d = Driver::new();
    d.client(&cmd(&["MONITOR"])).server(b"+OK\r\n");
    d.server(b"+1712345678.123456 [0 127.0.0.1:5000] \"get\" \"k\"\r\n");
    d.client(&cmd(&["RESET"])).server(b"+1712345678.2 [0 127.0.0.1:5000] \"set\" \"k\" \"v\"\r\n+RESET\r\n");
    assert_eq!(d.ops(), ["MONITOR", "RESET"]);
}

#[test]
fn client_reply_off_and_skip() {
    let mut d = Driver::new();
    d.client(&cmd(&["CLIENT", "REPLY", "OFF"]));
    d.client(&cmd(&["SET", "a", "1"]));
    assert_eq!(d.exchanges().len(), 2, "no reply is coming");
    d.client(&cmd(&["CLIENT", "REPLY", "ON"])).server(b"+OK\r\n");
    d.client(&cmd(&["CLIENT", "REPLY", "SKIP"]));
    d.client(&[cmd(&["SET", "b", "2"]), cmd(&["GET", "b"])].concat()).server(b"$1\r\n2\r\n");
    let x = d.exchanges();
    assert_eq!(d.ops(), ["CLIENT REPLY", "SET", "CLIENT REPLY", "CLIENT REPLY", "SET", "GET"]);
    assert!(x[1].response_first.is_none() && x[1].failure.is_none());
    assert!(x[2].response_first.is_some());
    assert!(x[4].response_first.is_none());
    assert_eq!(x[5].query_text.as_deref(), Some("GET b"));
    assert!(x[5].response_first.is_some());
}

#[test]
fn replication_link_is_not_followed() {
    let mut d = Driver::new();
    d.client(&cmd(&["PING"])).server(b"+PONG\r\n");
    d.client(&cmd(&["REPLCONF", "listening-port", "6380"])).server(b"+OK\r\n");
    d.client(&cmd(&["PSYNC", "?", "-1"]));
    assert!(d.session.is_broken());
    d.server(b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n$175\r\nREDIS0009\xfa");
    assert_eq!(d.ops(), ["PING", "REPLCONF", "PSYNC"]);
    assert!(d.exchanges()[2].response_first.is_none());
}
