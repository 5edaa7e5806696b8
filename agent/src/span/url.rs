//! URL attribute helpers. kspan runs as root on every node and sees every
//! request, so anything exported is metadata only: query values and
//! userinfo never leave the host.

/// What every query value is replaced with.
pub const REDACTED: &str = "REDACTED";

/// Splits a request-target into path and query, dropping any fragment.
/// An absolute-form target (`http://host/p?q`) yields its path part (`/`
/// when it has none). An empty target is `/`; `*` and authority-form
/// targets come back unchanged as the "path".
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = target.split('#').next().unwrap_or_default();
    let rest = match absolute_parts(target) {
        Some((_, _, rest)) => rest,
        None => target,
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    (if path.is_empty() { "/" } else { path }, query)
}

/// Keeps every key and replaces every value with `REDACTED`, preserving
/// order and the `&` / `;` separators: `a=1&b=&c` becomes
/// `a=REDACTED&b=REDACTED&c`. Parts without `=` are kept as they are.
pub fn redact_query(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 8);
    let mut rest = q;
    loop {
        let end = rest.find(['&', ';']).unwrap_or(rest.len());
        let (part, tail) = rest.split_at(end);
        match part.split_once('=') {
            Some((key, _)) => {
                out.push_str(key);
                out.push('=');
                out.push_str(REDACTED);
            }
            None => out.push_str(part),
        }
        let mut chars = tail.chars();
        match chars.next() {
            Some(sep) => {
                out.push(sep);
                rest = chars.as_str();
            }
            None => return out,
        }
    }
}

/// `url.full` for CLIENT spans: `scheme://host/path?redacted-query`, with
/// userinfo removed from `host`. An absolute-form `target` is used as is
/// (its own scheme and host), also without userinfo and with the query
/// redacted. Fragments are dropped.
pub fn full_url(scheme: &str, host: &str, target: &str) -> String {
    let target = target.split('#').next().unwrap_or_default();
    let (scheme, host) = match absolute_parts(target) {
        Some((s, authority, _)) => (s, authority),
        None => (scheme, host),
    };
    let (path, query) = split_target(target);
    let mut out = String::with_capacity(scheme.len() + host.len() + target.len() + 12);
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(strip_userinfo(host));
    // `*` and authority-form targets have no path to show.
    if path.starts_with('/') {
        out.push_str(path);
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(&redact_query(q));
    }
    out
}

/// Splits a `Host` header (or authority) into host and port: `[::1]:8080`
/// gives `("::1", 8080)`, `example.com` gives `("example.com", default_port)`.
/// A missing, empty, zero or unparsable port means `default_port`. The host
/// is lowercased (hosts are case-insensitive; this keeps cardinality low),
/// and userinfo is dropped.
pub fn split_host_port(host_header: &str, default_port: u16) -> (String, u16) {
    let authority = strip_userinfo(host_header.trim());
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, after)) => (h, after.strip_prefix(':')),
            None => (rest, None), // unterminated bracket: no port can be told apart
        }
    } else if authority.matches(':').count() == 1 {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    } else {
        // No colon, or a bare IPv6 address whose colons are not a port.
        (authority, None)
    };
    let port = port.and_then(parse_port).unwrap_or(default_port);
    (host.to_ascii_lowercase(), port)
}

/// `port = *DIGIT` (RFC 3986); `u16::from_str` alone would accept `+80`.
/// Port 0 cannot be a server's.
fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok().filter(|&n| n != 0)
}

/// `(scheme, authority, rest)` of an absolute-form target, where `rest`
/// starts at the path or query (possibly empty).
fn absolute_parts(target: &str) -> Option<(&str, &str, &str)> {
    let (scheme, after) = target.split_once("://")?;
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return None;
    }
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    Some((scheme, authority, rest))
}

/// Drops `user:pass@` from an authority; the last `@` ends userinfo.
fn strip_userinfo(authority: &str) -> &str {
    authority.rsplit_once('@').map_or(authority, |(_, host)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_origin_form() {
        assert_eq!(split_target("/a/b?x=1&y=2"), ("/a/b", Some("x=1&y=2")));
        assert_eq!(split_target("/a/b"), ("/a/b", None));
        assert_eq!(split_target("/a?"), ("/a", Some("")));
        assert_eq!(split_target("/a?x=1#frag"), ("/a", Some("x=1")));
        assert_eq!(split_target("/a#frag?notquery"), ("/a", None));
        assert_eq!(split_target("/a?x=?y"), ("/a", Some("x=?y")), "first '?' splits");
        assert_eq!(split_target(""), ("/", None));
        assert_eq!(split_target("?q"), ("/", Some("q")));
    }

    #[test]
    fn split_other_forms() {
        assert_eq!(split_target("http://example.com/p/q?s=1#f"), ("/p/q", Some("s=1")));
        assert_eq!(split_target("https://user:pw@example.com:8443"), ("/", None));
        assert_eq!(split_target("http://example.com?x"), ("/", Some("x")));
        assert_eq!(split_target("*"), ("*", None));
        assert_eq!(split_target("example.com:443"), ("example.com:443", None));
        // Not a scheme: the "://" sits inside the path.
        assert_eq!(split_target("/redirect?to=http://x/y"), ("/redirect", Some("to=http://x/y")));
    }

    #[test]
    fn redact() {
        assert_eq!(redact_query("a=1&b=&c"), "a=REDACTED&b=REDACTED&c");
        assert_eq!(redact_query(""), "");
        assert_eq!(redact_query("token=s3cr3t"), "token=REDACTED");
        assert_eq!(redact_query("a=1;b=2&&c=x=y"), "a=REDACTED;b=REDACTED&&c=REDACTED");
        assert_eq!(redact_query("=orphan&k"), "=REDACTED&k");
        assert_eq!(redact_query("k%20x=v%20y&"), "k%20x=REDACTED&");
        assert_eq!(redact_query("ключ=значение"), "ключ=REDACTED");
    }

    #[test]
    fn full_url_origin_form() {
        assert_eq!(full_url("http", "example.com", "/a?x=1&y"), "http://example.com/a?x=REDACTED&y");
        assert_eq!(full_url("https", "user:pw@example.com:8443", "/"), "https://example.com:8443/");
        assert_eq!(full_url("http", "h", "/p#frag"), "http://h/p");
        assert_eq!(full_url("http", "h", ""), "http://h/");
        assert_eq!(full_url("http", "h", "*"), "http://h");
        assert_eq!(full_url("http", "a@b@h", "/x"), "http://h/x");
    }

    #[test]
    fn full_url_absolute_form() {
        assert_eq!(
            full_url("http", "proxy.local", "http://u:p@api.example.com:81/v1/x?key=abc#f"),
            "http://api.example.com:81/v1/x?key=REDACTED"
        );
        assert_eq!(full_url("http", "proxy", "https://example.com"), "https://example.com/");
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("example.com", 80), ("example.com".into(), 80));
        assert_eq!(split_host_port("example.com:81", 80), ("example.com".into(), 81));
        assert_eq!(split_host_port(" Example.COM:8080 ", 80), ("example.com".into(), 8080));
        assert_eq!(split_host_port("[::1]:8080", 80), ("::1".into(), 8080));
        assert_eq!(split_host_port("[::1]", 443), ("::1".into(), 443));
        assert_eq!(split_host_port("[fe80::1%25eth0]:9", 80), ("fe80::1%25eth0".into(), 9));
        assert_eq!(split_host_port("::1", 80), ("::1".into(), 80), "bare IPv6");
        assert_eq!(split_host_port("10.0.0.1:3000", 80), ("10.0.0.1".into(), 3000));
        assert_eq!(split_host_port("h:065535", 80), ("h".into(), 65535), "leading zeros are digits");
        assert_eq!(split_host_port("user:pw@host:82", 80), ("host".into(), 82));
    }

    #[test]
    fn host_bad_ports() {
        for bad in ["h:", "h:abc", "h:65536", "h:-1", "h:0", "h:+80", "h: 80"] {
            assert_eq!(split_host_port(bad, 1), ("h".into(), 1), "{bad}");
        }
        assert_eq!(split_host_port("[::1]x", 80), ("::1".into(), 80));
        assert_eq!(split_host_port("[::1", 80), ("::1".into(), 80));
        assert_eq!(split_host_port("", 80), (String::new(), 80));
    }
}
