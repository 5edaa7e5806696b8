//! W3C Trace Context (`traceparent` / `tracestate`), parsed exactly as the
//! spec says so that a malformed header starts a new trace instead of
//! joining a bogus one.

/// Length of a version-00 `traceparent`; higher versions start with this.
const TRACEPARENT_LEN: usize = 55;
/// `tracestate` bounds: longer headers may be dropped (W3C: at least 512
/// characters must be propagated) and at most 32 list members exist.
const TRACESTATE_MAX_LEN: usize = 512;
const TRACESTATE_MAX_MEMBERS: usize = 32;
const TRACESTATE_MAX_KEY: usize = 256;
const TRACESTATE_MAX_VALUE: usize = 256;

/// A parsed `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// Format version (`0` today; never `0xff`).
    pub version: u8,
    /// Trace id, never all zero.
    pub trace_id: [u8; 16],
    /// Span id of the caller, never all zero.
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value, or `None` if it is invalid.
    ///
    /// Rules (W3C Trace Context §3.2): optional surrounding spaces/tabs;
    /// lowercase hex only; version `ff` is invalid; version `00` is exactly
    /// 55 characters; a higher version is parsed from its first 55
    /// characters and must continue with `-` if longer; all-zero trace-id
    /// or parent-id is invalid.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim_matches([' ', '\t']).as_bytes();
        let head = s.get(..TRACEPARENT_LEN)?;
        let version = hex_byte(&head[0..2])?;
        if version == 0xff {
            return None;
        }
        let tail_ok = match s.get(TRACEPARENT_LEN) {
            None => true,
            // Future versions may append fields; version 00 may not.
            Some(&b) => version != 0 && b == b'-',
        };
        if !tail_ok || head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
            return None;
        }
        let trace_id: [u8; 16] = hex_array(&head[3..35])?;
        let parent_id: [u8; 8] = hex_array(&head[36..52])?;
        let flags = hex_byte(&head[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self { version, trace_id, parent_id, flags })
    }

    /// The caller recorded this trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }

    /// A version-00 `traceparent` value: `00-<trace-id>-<span-id>-<flags>`.
    pub fn format(trace_id: &[u8; 16], span_id: &[u8; 8], flags: u8) -> String {
        let mut s = String::with_capacity(TRACEPARENT_LEN);
        s.push_str("00-");
        push_hex(&mut s, trace_id);
        s.push('-');
        push_hex(&mut s, span_id);
        s.push('-');
        push_hex(&mut s, &[flags]);
        s
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Lowercase hex digit value; uppercase is invalid in `traceparent`.
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    match two {
        [hi, lo] => Some(hex_digit(*hi)? << 4 | hex_digit(*lo)?),
        _ => None,
    }
}

fn hex_array<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(out)
}

/// Whether a (combined) `tracestate` value is worth propagating: at most
/// 512 characters and 32 members, each `key=value` per the W3C grammar,
/// no duplicate keys. Spaces/tabs around commas and empty members are
/// tolerated, as the spec requires. An empty value has nothing to keep.
///
/// Keys follow Trace Context Level 2 (`(lcalpha / DIGIT) 0*255(keychar)`,
/// keychar adding `_ - * / @`), which accepts every Level 1 key.
pub fn valid_tracestate(s: &str) -> bool {
    if s.len() > TRACESTATE_MAX_LEN {
        return false;
    }
    let mut keys: Vec<&str> = Vec::new();
    for member in s.split(',').map(|m| m.trim_matches([' ', '\t'])) {
        if member.is_empty() {
            continue;
        }
        let Some((key, value)) = member.split_once('=') else {
            return false;
        };
        if !valid_key(key) || !valid_value(value) || keys.contains(&key) {
            return false;
        }
        keys.push(key);
        if keys.len() > TRACESTATE_MAX_MEMBERS {
            return false;
        }
    }
    !keys.is_empty()
}

fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    let starts_ok = b.first().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    starts_ok
        && b.len() <= TRACESTATE_MAX_KEY
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@'))
}

/// `0*255(chr) nblk-chr`: printable ASCII without `,` and `=`, spaces
/// allowed but not last.
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    let chr = |c: &u8| (0x20..=0x7e).contains(c) && *c != b',' && *c != b'=';
    (1..=TRACESTATE_MAX_VALUE).contains(&b.len()) && b.iter().all(chr) && b.last().is_some_and(|&c| c != b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const TRACE: [u8; 16] =
        [0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c];
    const SPAN: [u8; 8] = [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31];

    #[test]
    fn parses_valid() {
        let tp = TraceParent::parse(VALID).expect("valid");
        assert_eq!(tp, TraceParent { version: 0, trace_id: TRACE, parent_id: SPAN, flags: 1 });
        assert!(tp.sampled());
        let tp = TraceParent::parse(&VALID.replace("-01", "-00")).expect("valid");
        assert!(!tp.sampled());
        // Unknown flag bits are kept; only bit 0 means sampled.
        let tp = TraceParent::parse(&VALID.replace("-01", "-fe")).expect("valid");
        assert_eq!((tp.flags, tp.sampled()), (0xfe, false));
    }

    #[test]
    fn surrounding_whitespace_tolerated() {
        assert!(TraceParent::parse(&format!(" \t{VALID}\t ")).is_some());
        assert!(TraceParent::parse(&format!("\n{VALID}")).is_none(), "only OWS");
    }

    #[test]
    fn lowercase_hex_only() {
        assert!(TraceParent::parse(&VALID.to_uppercase()).is_none());
        assert!(TraceParent::parse(&VALID.replace("0af7", "0AF7")).is_none());
        assert!(TraceParent::parse(&VALID.replace("b7ad", "b7aD")).is_none());
        assert!(TraceParent::parse(&VALID.replace("-01", "-0A")).is_none());
        assert!(TraceParent::parse(&VALID.replace("0af7", "0ag7")).is_none());
    }

    #[test]
    fn version_rules() {
        assert!(TraceParent::parse(&VALID.replacen("00", "ff", 1)).is_none(), "ff is invalid");
        assert!(TraceParent::parse(&VALID.replacen("00", "0g", 1)).is_none());
        assert!(TraceParent::parse(&format!("{VALID}-")).is_none(), "version 00 is exactly 55");
        assert!(TraceParent::parse(&format!("{VALID}0")).is_none());
        let future = VALID.replacen("00", "cc", 1);
        let tp = TraceParent::parse(&future).expect("future version, 55 chars");
        assert_eq!(tp.version, 0xcc);
        assert!(TraceParent::parse(&format!("{future}-what-the-future-will-be-like")).is_some());
        assert!(TraceParent::parse(&format!("{future}.what")).is_none(), "next char must be '-'");
        assert!(TraceParent::parse(&format!("{future}0")).is_none());
    }

    #[test]
    fn structure_rules() {
        assert!(TraceParent::parse(&VALID[..54]).is_none(), "too short");
        assert!(TraceParent::parse("").is_none());
        assert!(TraceParent::parse(&VALID.replacen('-', "_", 1)).is_none());
        assert!(TraceParent::parse(&VALID.replace("-b7ad", "_b7ad")).is_none());
        assert!(TraceParent::parse(&VALID.replace("-01", "_01")).is_none());
        assert!(TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-101").is_none());
        // Multi-byte characters must not panic on slicing.
        assert!(TraceParent::parse("00-0af7651916cd43dd8448eb211c80319é-b7ad6b7169203331-01").is_none());
        assert!(TraceParent::parse(&"é".repeat(30)).is_none());
    }

    #[test]
    fn zero_ids_invalid() {
        assert!(TraceParent::parse("00-00000000000000000000000000000000-b7ad6b7169203331-01").is_none());
        assert!(TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01").is_none());
    }

    #[test]
    fn format_roundtrip() {
        let s = TraceParent::format(&TRACE, &SPAN, 1);
        assert_eq!(s, VALID);
        assert_eq!(
            TraceParent::format(&[0xff; 16], &[0x01; 8], 0),
            "00-ffffffffffffffffffffffffffffffff-0101010101010101-00"
        );
        let tp = TraceParent::parse(&s).expect("valid");
        assert_eq!(TraceParent::format(&tp.trace_id, &tp.parent_id, tp.flags), s);
    }

    #[test]
    fn tracestate_valid() {
        assert!(valid_tracestate("congo=t61rcWkgMzE"));
        assert!(valid_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
        assert!(valid_tracestate("rojo=1 , \tcongo=2"), "OWS around commas");
        assert!(valid_tracestate("a=1,,b=2, ,"), "empty members");
        assert!(valid_tracestate("tenant@vendor=x"), "multi-tenant key");
        assert!(valid_tracestate("0tenant@vendor=x"), "digit-leading key");
        assert!(valid_tracestate("k_-*/=v a!~"), "key charset; space inside value");
        assert!(valid_tracestate("k= v"), "leading space in value");
    }

    #[test]
    fn tracestate_invalid() {
        assert!(!valid_tracestate(""));
        assert!(!valid_tracestate(" , "));
        assert!(!valid_tracestate("novalue"));
        assert!(!valid_tracestate("Upper=1"), "uppercase key");
        assert!(!valid_tracestate("_k=1"), "key must start with a letter or digit");
        assert!(!valid_tracestate("k.x=1"), "key charset");
        assert!(!valid_tracestate("k="), "empty value");
        assert!(!valid_tracestate("k=a=b"), "'=' in value");
        assert!(!valid_tracestate("k=\u{7f}"), "non-printable value");
        assert!(!valid_tracestate("k=é"), "non-ASCII value");
        assert!(!valid_tracestate("a=1,a=2"), "duplicate key");
        assert!(!valid_tracestate(&format!("k={}", "v".repeat(257))), "value > 256");
        assert!(valid_tracestate(&format!("k={}", "v".repeat(256))));
        assert!(!valid_tracestate(&format!("{}=v", "k".repeat(257))), "key > 256");
    }

    #[test]
    fn tracestate_bounds() {
        let members = |n: usize| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        assert!(valid_tracestate(&members(32)));
        assert!(!valid_tracestate(&members(33)), "more than 32 members");
        let long = format!("k={}", "v".repeat(250)) + "," + &format!("j={}", "v".repeat(250));
        assert!(long.len() <= 512 && valid_tracestate(&long));
        let too_long = format!("{long},z={}", "v".repeat(20));
        assert!(too_long.len() > 512 && !valid_tracestate(&too_long));
    }
}
