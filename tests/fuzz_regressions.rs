//! Replays every input the fuzzers ever crashed on (`cargo xtask fuzz`
//! copies new crashes to tests/fuzz_regressions/<target>/), plus a fixed set
//! of hostile inputs, through the same entry points the fuzz targets use.

use std::path::Path;

use kspan::protocol::fuzzing;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz_regressions").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "md") {
            continue;
        }
        run(&std::fs::read(entry.path()).unwrap());
        n += 1;
    }
    n
}

/// Inputs every parser must survive, whatever the fuzzer found so far.
fn hostile() -> Vec<Vec<u8>> {
    let mut v = vec![Vec::new(), vec![0xff; 4096], b"GET / HTTP/1.1\r\n".repeat(2000)];
    v.push(format!("\x3fPOST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", u64::MAX).into_bytes());
    v.push([b"\x00PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(), &[0xff; 64]].concat());
    // A 1 MiB header block.
    let mut big = b"\x3fGET / HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 1 << 20));
    v.push(big);
    // Database framing with absurd lengths and bottomless nesting.
    v.push([b"\x00\x00\x00\x00\x08\x04\xd2\x16\x2f".as_slice(), b"Q\x7f\xff\xff\xff", &[b'x'; 64]].concat());
    v.push([b"\x00".as_slice(), &b"*2147483647\r\n".repeat(200)].concat());
    v.push([b"\x80\xff\xff\xff\x00\x0a5.7.0\x00".as_slice(), &[0xfe; 512]].concat());
    v
}

#[test]
fn parsers_survive_recorded_crashes_and_hostile_input() {
    let targets: [(&str, fn(&[u8])); 7] = [
        ("http1", fuzzing::http1),
        ("http2", fuzzing::http2),
        ("decode", fuzzing::decode),
        ("postgres", fuzzing::postgres),
        ("redis", fuzzing::redis),
        ("mysql", fuzzing::mysql),
        ("go_pclntab", fuzzing::go_pclntab),
    ];
    for (target, run) in targets {
        replay(target, run);
        for input in hostile() {
            run(&input);
        }
    }
}
