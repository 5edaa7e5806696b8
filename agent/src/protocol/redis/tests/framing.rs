//! Framing: pairing, pipelining, splits, RESP3 values, inline commands, detection.

use super::*;

#[test]
fn command_and_reply_pair() {
    let mut d = Driver::new();
    d.client(&cmd(&["SET", "user:1", "alice"])).server(b"+OK\r\n");
    d.client(&cmd(&["get", "user:1"])).server(&bulk("alice"));
    d.client(&cmd(&["GET", "nope"])).server(b"$-1\r\n");
    let x = d.exchanges();
    assert_eq!(x.len(), 3);
    assert_eq!(d.ops(), ["SET", "GET", "GET"]);
    assert_eq!(d.texts(), ["SET user:1 ?", "GET user:1", "GET nope"]);
    assert!(x.iter().all(|x| x.error.is_none() && x.failure.is_none() && x.batch_size == 1));
    assert!(x.iter().all(|x| x.namespace.as_deref() == Some("0")));
    assert_eq!(x[0].request_first, Ts { enter_ns: 10, exit_ns: 15 });
    assert_eq!(x[0].response_first, Some(Ts { enter_ns: 20, exit_ns: 25 }));
    assert_eq!(x[0].response_last, x[0].response_first);
    assert!(x.iter().all(|x| x.rows.is_none()));
}

#[test]
fn started_comes_before_the_reply() {
    let mut d = Driver::new();
    d.client(&cmd(&["PING"]));
    assert!(matches!(d.events.as_slice(), [DbEvent::Started { seq: 0, .. }]));
    d.server(b"+PONG\r\n");
    assert_eq!(d.exchanges().len(), 1);
}

#[test]
fn pipeline_of_hundreds_in_one_write() {
    let mut d = Driver::new();
    let mut batch = Vec::new();
    let mut replies = Vec::new();
    for i in 0..500 {
        batch.extend(cmd(&["INCR", &format!("c{i}")]));
        replies.extend(format!(":{i}\r\n").as_bytes());
    }
    d.client(&batch);
    assert_eq!(d.started(), 500);
    // Replies in uneven reads.
    for piece in replies.chunks(7) {
        d.server(piece);
    }
    let x = d.exchanges();
    assert_eq!(x.len(), 500);
    assert_eq!(x[499].query_text.as_deref(), Some("INCR c499"));
    assert!(x.iter().all(|x| x.failure.is_none()));
}

#[test]
fn commands_and_replies_split_at_every_byte() {
    let request = [cmd(&["HSET", "h", "f", "v"]), cmd(&["LRANGE", "l", "0", "-1"]), b"PING\r\n".to_vec()].concat();
    let reply = [&b":1\r\n"[..], b"*2\r\n$1\r\na\r\n$-1\r\n", b"-ERR x y\r\n"].concat();
    let whole = {
        let mut d = Driver::new();
        d.client(&request).server(&reply);
        d.exchanges().into_iter().cloned().collect::<Vec<_>>()
    };
    assert_eq!(whole.len(), 3);
    assert_eq!(whole[1].rows, Some(2));
    for cut in 0..=request.len() {
        for rcut in [0, 1, 3, 4, 5, 9, 12, 20, 27, reply.len()] {
            let mut d = Driver::new();
            d.client(&request[..cut]).client(&request[cut..]);
            d.server(&reply[..rcut]).server(&reply[rcut..]);
            let got: Vec<_> = d
                .exchanges()
                .iter()
                .map(|x| (x.operation.clone(), x.query_text.clone(), x.rows, x.error.clone()))
                .collect();
            let want: Vec<_> =
                whole.iter().map(|x| (x.operation.clone(), x.query_text.clone(), x.rows, x.error.clone())).collect();
            assert_eq!(got, want, "client cut {cut}, server cut {rcut}");
        }
    }
}

#[test]
fn errors_give_code_and_message() {
    let mut d = Driver::new();
    d.client(&cmd(&["HGET", "user:1", "x"]))
        .server(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    d.client(&cmd(&["FOO"])).server(b"-ERR\r\n");
    let long = format!("-ERR {}\r\n", "x".repeat(5000));
    d.client(&cmd(&["BAR"])).server(long.as_bytes());
    let x = d.exchanges();
    let e = x[0].error.as_ref().unwrap();
    assert_eq!(e.code, "WRONGTYPE");
    assert_eq!(e.message, "Operation against a key holding the wrong kind of value");
    assert_eq!(x[1].error.as_ref().unwrap().code, "ERR");
    assert_eq!(x[1].error.as_ref().unwrap().message, "");
    assert_eq!(x[2].error.as_ref().unwrap().message.len(), crate::protocol::db::MAX_ERROR_MESSAGE);
    assert_eq!(x[1].query_text.as_deref(), Some("FOO"));
}

#[test]
fn resp3_types_and_attributes() {
    let mut d = Driver::new();
    let replies: &[&[u8]] = &[
        b"_\r\n",
        b",3.14\r\n",
        b"#t\r\n",
        b"=15\r\ntxt:Some string\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"!21\r\nSYNTAX invalid syntax\r\n",
        b"%2\r\n+a\r\n:1\r\n+b\r\n*2\r\n:1\r\n%1\r\n+x\r\n~0\r\n",
        b"~3\r\n+a\r\n+b\r\n+c\r\n",
        b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n",
        b"*0\r\n",
        b"*-1\r\n",
    ];
    for (i, r) in replies.iter().enumerate() {
        d.client(&cmd(&["CMD", &i.to_string()])).server(r);
    }
    let x = d.exchanges();
    assert_eq!(x.len(), replies.len());
    assert!(x.iter().all(|x| x.failure.is_none()));
    assert_eq!(x[5].error.as_ref().unwrap().code, "SYNTAX");
    assert_eq!(x[5].error.as_ref().unwrap().message, "invalid syntax");
    assert_eq!(x[6].rows, Some(2));
    assert_eq!(x[7].rows, Some(3));
    assert_eq!(x[8].rows, Some(2), "the attribute is not the reply");
    assert_eq!(x[9].rows, Some(0));
    assert_eq!(x[10].rows, None);
}

#[test]
fn inline_commands() {
    let mut d = Driver::new();
    d.client(b"PING\r\n").server(b"+PONG\r\n");
    d.client(b"\r\n  \r\n").client(b"set k v\r\nget k\n").server(b"+OK\r\n$1\r\nv\r\n");
    assert_eq!(d.texts(), ["PING", "SET k ?", "GET k"]);
    assert_eq!(d.exchanges().len(), 3);
}

#[test]
fn empty_arrays_are_no_command() {
    let mut d = Driver::new();
    d.client(b"*0\r\n*-1\r\n").client(&cmd(&["PING"])).server(b"+PONG\r\n");
    assert_eq!(d.ops(), ["PING"]);
}

#[test]
fn detection() {
    let yes: &[&[u8]] = &[
        b"*1\r\n$4\r\nPING\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
        b"*3\r\n$3\r\nSE",
        b"*3\r\n$3",
        b"*3",
        b"*2\r\n$8\r\nJSON.GET\r\n",
        b"PING\r\n",
        b"ping\n",
        b"AUTH pw\r\n",
        b"INFO server\r\n",
    ];
    let no: &[&[u8]] = &[
        b"",
        b"*",
        b"*0\r\n",
        b"*a\r\n",
        b"*2\r\n+PING\r\n",
        b"*1\r\n$4\r\n1234\r\n",
        b"*1\r\n$4\r\nPI\r\n",
        b"*99999999\r\n",
        b"*1\r\n$100\r\n",
        b"GET / HTTP/1.1\r\n",
        b"PINGPONG\r\n",
        b"PING",
        b"SET k v\r\n",
        b"* list item\n",
        b"\x16\x03\x01\x02\x00",
    ];
    for y in yes {
        assert!(looks_like_command(y), "{:?}", String::from_utf8_lossy(y));
    }
    for n in no {
        assert!(!looks_like_command(n), "{:?}", String::from_utf8_lossy(n));
    }
}
