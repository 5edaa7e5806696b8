//! `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`: `k=v,k2=v2` lists with URL-encoded values.

use super::ExportError;
use super::config::invalid;

/// `k=v,k2=v2` with URL-encoded values (W3C baggage style, as the spec says).
pub(super) fn parse_headers(var: &str, value: &str) -> Result<Vec<(String, String)>, ExportError> {
    // Header values are often credentials: errors name the entry, never echo it.
    const HIDDEN: &str = "<not shown>";
    let mut out = Vec::new();
    for (n, item) in value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let Some((k, v)) = item.split_once('=') else {
            return Err(invalid(
                var,
                HIDDEN,
                format!("entry {} is not key=value", n + 1),
            ));
        };
        let k = k.trim();
        let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if k.is_empty() || !k.chars().all(is_tchar) {
            return Err(invalid(
                var,
                HIDDEN,
                format!("entry {} has an invalid header name", n + 1),
            ));
        }
        // Same fallback as opentelemetry-otlp, which re-reads these variables
        // itself: if ours differed, its value would silently win.
        let v = url_decode(v.trim()).unwrap_or_else(|| v.trim().to_owned());
        if !v.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
            return Err(invalid(
                var,
                HIDDEN,
                format!("value of {k:?} must be printable ASCII"),
            ));
        }
        out.push((k.to_owned(), v));
    }
    Ok(out)
}

fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_decode_falls_back_like_the_otlp_crate() {
        assert_eq!(url_decode("a%20b"), Some("a b".to_owned()));
        assert_eq!(url_decode("50%"), None);
        assert_eq!(url_decode("%zz"), None);
        assert_eq!(url_decode("%ff"), None, "not UTF-8");
    }
}
