//! HPACK decoder: RFC 7541 Appendix C examples byte for byte, Huffman,
//! integer edge cases, table eviction, mid-stream semantics and bombs.

use super::super::hpack::{Decoder, Field, HpackError, MAX_TRACKED_TABLE, read_int};
use super::super::huffman::{self, HuffmanError};
use super::{Hb, hint, huffman as henc};

/// Decoded fields as strings; `?` for an unknown field.
fn dec(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
    let mut v = Vec::new();
    d.decode(block, false, |f| match f {
        Field::Known { name, value } => {
            v.push((String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(value).into_owned()));
        }
        Field::Unknown => v.push(("?".into(), "?".into())),
    })?;
    Ok(v)
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0)).collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn rfc_c4_requests_with_huffman_share_the_dynamic_table() {
    let mut d = Decoder::new(false);
    let r1 = dec(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
    assert_eq!(
        r1,
        pairs(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")])
    );
    let r2 = dec(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
    assert_eq!(r2[3], (":authority".into(), "www.example.com".into()));
    assert_eq!(r2[4], ("cache-control".into(), "no-cache".into()));
    let r3 = dec(&mut d, &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")).unwrap();
    assert_eq!(
        r3,
        pairs(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ])
    );
    // Table: custom-key, cache-control, :authority = 54 + 53 + 57.
    assert_eq!(d.table_bytes(), 164);
}

#[test]
fn rfc_c6_responses_evict_with_a_256_byte_table() {
    let mut d = Decoder::new(false);
    // The RFC example sets the table to 256 bytes out of band; a size
    // update at the start of the first block does the same in band.
    let mut b1 = Hb::new().size(256).0;
    b1.extend(hex("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                   2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3"));
    let r1 = dec(&mut d, &b1).unwrap();
    assert_eq!(
        r1,
        pairs(&[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ])
    );
    assert_eq!(d.table_bytes(), 222);
    // ":status 307" evicts ":status 302"; the rest are indexed.
    let r2 = dec(&mut d, &hex("4883 640e ffc1 c0bf")).unwrap();
    assert_eq!(r2[0], (":status".into(), "307".into()));
    assert_eq!(r2[3], ("location".into(), "https://www.example.com".into()));
    assert_eq!(d.table_bytes(), 222);
    let r3 = dec(
        &mut d,
        &hex("88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
              77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
              9587 3160 65c0 03ed 4ee5 b106 3d50 07"),
    )
    .unwrap();
    assert_eq!(
        r3,
        pairs(&[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", "https://www.example.com"),
            ("content-encoding", "gzip"),
            ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
        ])
    );
    assert_eq!(d.table_bytes(), 215);
}

#[test]
fn literal_kinds_and_never_indexed() {
    let mut d = Decoder::new(false);
    let b = Hb::new().lit("password", "secret", false).never_i(4, "/p").lit_i(58, "ua", true).0;
    assert_eq!(dec(&mut d, &b).unwrap(), pairs(&[("password", "secret"), (":path", "/p"), ("user-agent", "ua")]));
    assert_eq!(d.table_bytes(), 0, "nothing indexed");
}

#[test]
fn huffman_round_trips_every_byte() {
    let all: Vec<u8> = (0..=255u8).collect();
    let mut out = Vec::new();
    huffman::decode(&henc(&all), &mut out).unwrap();
    assert_eq!(out, all);
    for s in ["", "a", "www.example.com", "no-cache", "application/grpc"] {
        let mut out = Vec::new();
        huffman::decode(&henc(s.as_bytes()), &mut out).unwrap();
        assert_eq!(out, s.as_bytes());
    }
}

#[test]
fn huffman_rejects_bad_padding_and_eos() {
    let mut out = Vec::new();
    // 'a' is 00011 (5 bits): padding 000 is not a prefix of EOS.
    assert_eq!(huffman::decode(&[0b0001_1000], &mut out), Err(HuffmanError::Padding));
    // A whole byte of ones is more than 7 bits of padding.
    assert_eq!(huffman::decode(&[0b0001_1111, 0xff], &mut out), Err(HuffmanError::Padding));
    // EOS (30 ones) inside the string.
    assert_eq!(huffman::decode(&[0xff, 0xff, 0xff, 0xfc], &mut out), Err(HuffmanError::Eos));
}

#[test]
fn integers_decode_at_boundaries_and_overflow_is_an_error() {
    for (n, v) in [(5u8, 10u32), (5, 30), (5, 31), (5, 1337), (7, 127), (7, 255), (4, u32::MAX), (6, 1 << 20)] {
        let b = hint(0, n, v);
        let mut pos = 0;
        assert_eq!(read_int(&b, &mut pos, n), Ok(v), "n={n} v={v}");
        assert_eq!(pos, b.len());
    }
    let mut pos = 0;
    assert_eq!(read_int(&[0x1f, 0x9a, 0x0a], &mut pos, 5), Ok(1337), "RFC C.1.2");
    let over = [0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert_eq!(read_int(&over, &mut 0, 7), Err(HpackError::IntegerOverflow));
    let zeros = [0x7f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
    assert_eq!(read_int(&zeros, &mut 0, 7), Err(HpackError::IntegerOverflow), "endless continuation");
    assert_eq!(read_int(&[0x7f, 0x80], &mut 0, 7), Err(HpackError::Truncated));
}

#[test]
fn bad_blocks_are_errors_not_panics() {
    let mut d = Decoder::new(false);
    assert_eq!(dec(&mut d, &[0x80]), Err(HpackError::InvalidIndex(0)));
    assert_eq!(dec(&mut d, &[0xbe]), Err(HpackError::InvalidIndex(62)), "empty dynamic table");
    // String length beyond the block.
    assert_eq!(dec(&mut d, &[0x04, 0x7f, 0x80, 0x01, b'a']), Err(HpackError::Truncated));
    // Index integer overflow.
    assert_eq!(dec(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), Err(HpackError::IntegerOverflow));
    // Size update above the SETTINGS bound (default 4096), and after a field.
    assert_eq!(dec(&mut d, &Hb::new().size(1 << 20).0), Err(HpackError::TableSizeTooLarge(1 << 20)));
    assert_eq!(dec(&mut d, &Hb::new().idx(2).size(0).0), Err(HpackError::SizeUpdateMisplaced));
    // Cut blocks decode their complete fields only.
    let b = Hb::new().idx(2).lit("x-long", "value", false).0;
    let mut names = Vec::new();
    d.decode(&b[..b.len() - 2], true, |f| names.push(matches!(f, Field::Known { .. }))).unwrap();
    assert_eq!(names, [true]);
}

#[test]
fn size_updates_bound_by_settings_and_evict() {
    let mut d = Decoder::new(false);
    dec(&mut d, &Hb::new().inc("a", "1", false).inc("b", "2", false).0).unwrap();
    assert_eq!(d.table_bytes(), 68);
    // Shrinking to 40 keeps only the newest entry (b: 34 bytes).
    assert_eq!(dec(&mut d, &Hb::new().size(40).idx(62).0).unwrap(), pairs(&[("b", "2")]));
    assert_eq!(dec(&mut d, &[0xbf]), Err(HpackError::InvalidIndex(63)));
    // A bigger table needs the receiver's SETTINGS first.
    assert!(dec(&mut d, &Hb::new().size(8192).0).is_err());
    d.allow_table_size(8192);
    assert!(dec(&mut d, &Hb::new().size(8192).0).is_ok());
    // An entry larger than the whole table empties it (RFC 7541 §4.4).
    dec(&mut d, &Hb::new().size(64).inc("big", &"v".repeat(100), false).0).unwrap();
    assert_eq!(d.table_bytes(), 0);
    assert_eq!(dec(&mut d, &[0xbe]), Err(HpackError::InvalidIndex(62)));
}

#[test]
fn mid_stream_unknown_indices_are_unknown_not_guessed() {
    let mut d = Decoder::new(true);
    // Static entries and literals are known; dynamic references are not.
    let b = Hb::new().idx(3).idx(70).lit_i(4, "/a", false).lit_i(65, "v", false).0;
    assert_eq!(dec(&mut d, &b).unwrap(), pairs(&[(":method", "POST"), ("?", "?"), (":path", "/a"), ("?", "?")]));
    // Entries inserted after joining are known relative to the newest end.
    dec(&mut d, &Hb::new().inc("x-a", "1", false).inc_i(58, "agent/1", true).0).unwrap();
    let b = Hb::new().idx(62).idx(63).idx(64).0;
    assert_eq!(dec(&mut d, &b).unwrap(), pairs(&[("user-agent", "agent/1"), ("x-a", "1"), ("?", "?")]));
    // An incrementally indexed field with an unknown name shifts every
    // index by an entry of unknown size: nothing older is trusted.
    dec(&mut d, &Hb::new().inc_i(70, "v", false).0).unwrap();
    assert_eq!(dec(&mut d, &Hb::new().idx(62).idx(63).0).unwrap(), pairs(&[("?", "?"), ("?", "?")]));
    // A size update to 0 empties the peer's table: fully known again, so an
    // out-of-range index is an error once more.
    dec(&mut d, &Hb::new().size(0).size(4096).inc("k", "v", false).0).unwrap();
    assert_eq!(dec(&mut d, &[0xbe]).unwrap(), pairs(&[("k", "v")]));
    assert_eq!(dec(&mut d, &[0xbf]), Err(HpackError::InvalidIndex(63)));
}

#[test]
fn poisoned_decoder_keeps_new_entries() {
    let mut d = Decoder::new(false);
    dec(&mut d, &Hb::new().inc("a", "1", false).0).unwrap();
    d.poison();
    assert_eq!(dec(&mut d, &[0xbe]).unwrap(), pairs(&[("?", "?")]));
    dec(&mut d, &Hb::new().inc("b", "2", false).0).unwrap();
    assert_eq!(dec(&mut d, &[0xbe, 0xbf]).unwrap(), pairs(&[("b", "2"), ("?", "?")]));
}

#[test]
fn repeated_large_literals_stay_bounded() {
    let mut d = Decoder::new(true); // unknown SETTINGS: any size update allowed
    let big = "z".repeat(4000);
    let mut b = Hb::new().size(u32::MAX);
    for i in 0..40 {
        b = b.inc(&format!("h{i}"), &big, false);
    }
    dec(&mut d, &b.0).unwrap();
    assert!(d.table_bytes() <= MAX_TRACKED_TABLE, "{}", d.table_bytes());
    // The newest entries are still known; the ones dropped for memory are
    // unknown (the peer may hold them), not errors.
    let r = dec(&mut d, &Hb::new().idx(62).idx(61 + 40).0).unwrap();
    assert_eq!(r[0].0, "h39");
    assert_eq!(r[1].0, "?");
}
