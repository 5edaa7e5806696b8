//! Operation names, sanitised query text, credentials.

use super::*;

#[test]
fn query_text_rules() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["SET", "user:1", "secret", "EX", "10"], "SET", "SET user:1 ? ? ?"),
        (&["HSET", "h", "f", "v"], "HSET", "HSET h ? ?"),
        (&["MGET", "k1", "k2"], "MGET", "MGET k1 k2"),
        (&["DEL", "a", "b", "c"], "DEL", "DEL a b c"),
        (&["MSET", "k1", "v1", "k2", "v2"], "MSET", "MSET k1 ? k2 ?"),
        (&["BLPOP", "q1", "q2", "5"], "BLPOP", "BLPOP q1 q2 ?"),
        (&["RENAME", "a", "b"], "RENAME", "RENAME a b"),
        (&["EVAL", "return redis.call('get', KEYS[1])", "1", "k", "arg"], "EVAL", "EVAL ? 1 k ?"),
        (&["EVALSHA", "abc123", "2", "k1", "k2", "v"], "EVALSHA", "EVALSHA ? 2 k1 k2 ?"),
        (&["FCALL", "myfunc", "1", "k", "v"], "FCALL", "FCALL myfunc 1 k ?"),
        (&["config", "get", "maxmemory"], "CONFIG GET", "CONFIG GET maxmemory"),
        (&["CONFIG", "SET", "requirepass", "hunter2"], "CONFIG SET", "CONFIG SET requirepass ?"),
        (&["CLIENT", "SETNAME", "myapp"], "CLIENT SETNAME", "CLIENT SETNAME ?"),
        (&["CLUSTER", "INFO"], "CLUSTER INFO", "CLUSTER INFO"),
        (&["XINFO", "STREAM", "s1"], "XINFO STREAM", "XINFO STREAM s1"),
        (&["OBJECT", "ENCODING", "k"], "OBJECT ENCODING", "OBJECT ENCODING k"),
        (&["SCRIPT", "LOAD", "return 1"], "SCRIPT LOAD", "SCRIPT LOAD ?"),
        (&["FUNCTION", "LOAD", "#!lua name=x"], "FUNCTION LOAD", "FUNCTION LOAD ?"),
        (&["ECHO", "hello"], "ECHO", "ECHO ?"),
        (&["JSON.SET", "doc", "$", "{}"], "JSON.SET", "JSON.SET ? ? ?"),
        (&["SELECT", "3"], "SELECT", "SELECT 3"),
        (&["PUBLISH", "news", "body"], "PUBLISH", "PUBLISH news ?"),
        (&["COMMAND"], "COMMAND", "COMMAND"),
    ];
    for (args, op, text) in cases {
        let mut d = Driver::new();
        d.client(&cmd(args)).server(b"+OK\r\n");
        let x = d.exchanges();
        assert_eq!(x[0].operation.as_deref(), Some(*op), "{args:?}");
        assert_eq!(x[0].query_text.as_deref(), Some(*text), "{args:?}");
    }
}

#[test]
fn credentials_never_leave() {
    let mut d = Driver::new();
    d.client(&cmd(&["AUTH", "hunter2"])).server(b"+OK\r\n");
    d.client(&cmd(&["AUTH", "alice", "hunter3"])).server(b"+OK\r\n");
    d.client(&cmd(&["HELLO", "3", "AUTH", "bob", "hunter4", "SETNAME", "app"])).server(b"%1\r\n+server\r\n+redis\r\n");
    d.client(&cmd(&["MIGRATE", "h", "6379", "", "0", "5000", "AUTH", "hunter5", "KEYS", "a"])).server(b"+NOKEY\r\n");
    d.client(&cmd(&["CONFIG", "SET", "masterauth", "hunter6"])).server(b"+OK\r\n");
    d.client(b"AUTH hunter7\r\n").server(b"-WRONGPASS invalid\r\n");
    d.client(&cmd(&["ACL", "SETUSER", "carol", ">hunter8"])).server(b"+OK\r\n");
    let x = d.exchanges();
    assert_eq!(x[0].query_text.as_deref(), Some("AUTH ?"));
    assert_eq!(x[0].user.as_deref(), Some("default"));
    assert_eq!(x[1].query_text.as_deref(), Some("AUTH ?"));
    assert_eq!(x[1].user.as_deref(), Some("alice"));
    assert_eq!(x[2].query_text.as_deref(), Some("HELLO 3 ? ? ? ? ?"));
    assert_eq!(x[2].user.as_deref(), Some("bob"));
    assert_eq!(x[3].query_text.as_deref(), Some("MIGRATE ? ? ? ? ? ? ? ? ?"));
    assert_eq!(x[4].query_text.as_deref(), Some("CONFIG SET masterauth ?"));
    assert_eq!(x[5].query_text.as_deref(), Some("AUTH ?"));
    assert_eq!(x[5].user.as_deref(), Some("bob"), "a failed AUTH changes nothing");
    assert_eq!(x[6].query_text.as_deref(), Some("ACL SETUSER ? ?"));
    let all = format!("{:?}", d.events);
    assert!(!all.contains("hunter"), "a password leaked: {all}");
}

#[test]
fn long_query_text_is_cut() {
    let keys: Vec<String> = (0..2000).map(|i| format!("key:{i}")).collect();
    let mut args = vec!["DEL"];
    args.extend(keys.iter().map(String::as_str));
    let mut d = Driver::new();
    d.client(&cmd(&args)).server(b":0\r\n");
    let text = d.exchanges()[0].query_text.clone().unwrap();
    assert!(text.len() <= MAX_QUERY_TEXT && text.starts_with("DEL key:0 key:1 "));
}

#[test]
fn command_table_is_sorted() {
    assert!(COMMANDS.windows(2).all(|w| w[0].0 < w[1].0));
}
