//! The dispatcher's detection functions.

use super::super::{looks_like_client_messages, looks_like_startup};
use super::*;

#[test]
fn startup_and_requests_are_recognised() {
    assert!(looks_like_startup(&startup("app", Some("db"))));
    assert!(looks_like_startup(&startup("app", None)[..12]), "a prefix is enough");
    assert!(looks_like_startup(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]), "SSLRequest");
    assert!(looks_like_startup(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]), "GSSENCRequest");
    assert!(looks_like_startup(&[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2]), "CancelRequest");
    let mut v32 = startup("app", None);
    v32[7] = 2;
    assert!(looks_like_startup(&v32), "protocol 3.2");
}

#[test]
fn other_first_bytes_are_not_startups() {
    let cases: [&[u8]; 9] = [
        b"",
        &[0, 0, 0, 8, 0x04, 0xd2],
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"*1\r\n$4\r\nPING\r\n",
        &[0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 0],
        &[0, 0, 0, 20, 0, 2, 0, 0, b'u', 0],
        &[0, 1, 0, 0, 0, 3, 0, 0, b'u', 0],
        &[0, 0, 0, 20, 0, 3, 0, 0, 1, 2, 3, 4],
    ];
    for c in cases {
        assert!(!looks_like_startup(c), "{c:?}");
    }
}

#[test]
fn client_messages_are_recognised_mid_stream() {
    assert!(looks_like_client_messages(&query("SELECT 1")));
    assert!(looks_like_client_messages(&query("SELECT * FROM t WHERE a = 'é'")[..20]));
    assert!(looks_like_client_messages(&cat(&[parse("", "SELECT $1"), bind("", "", &[b"1"]), execute("", 0), sync()])));
    assert!(looks_like_client_messages(&cat(&[bind("p", "s", &[b"\x00\x01"]), execute("p", 0), sync()])));
    assert!(looks_like_client_messages(&sync()));
    assert!(looks_like_client_messages(&msg(b'X', b"")));
    assert!(looks_like_client_messages(&describe_portal("")));
}

#[test]
fn other_bytes_are_not_client_messages() {
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"Q\x00\x00".to_vec(),
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        b"POST /x HTTP/1.1\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00".to_vec(),
        b"*3\r\n$3\r\nSET\r\n".to_vec(),
        startup("app", None),
        msg(b'S', b"x"),
        b"Q\x01\x00\x00\x00SELECT".to_vec(),
        msg(b'Q', b"SELECT\x01\x02\x03\0"),
        msg(b'Q', b"SELECT 1\0trailing"),
        cat(&[query("SELECT 1"), b"garbage!".to_vec()]),
        msg(b'd', b"copy data"),
        msg(b'Z', b"I"),
    ];
    for c in &cases {
        assert!(!looks_like_client_messages(c), "{c:?}");
    }
}
