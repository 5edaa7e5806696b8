//! Low-cardinality route templates (`http.route`, span names): a request
//! path becomes either a user pattern that matches it or the path with id-like
//! segments replaced by `{id}`, so every user, order or session does not
//! make its own span name.

use std::borrow::Cow;

/// A route pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Patterns are absolute paths.
    #[error("route pattern {0:?} must start with '/'")]
    NotAbsolute(String),
    /// `*` may only be the whole last segment.
    #[error("route pattern {0:?}: '*' is only allowed as the whole last segment")]
    MisplacedWildcard(String),
    /// A segment with braces that is not exactly `{name}`.
    #[error("route pattern {pattern:?}: segment {segment:?} is not a literal or a {{name}} parameter")]
    BadParameter {
        /// The offending pattern.
        pattern: String,
        /// The offending segment.
        segment: String,
    },
}

/// Turns request paths into route templates.
#[derive(Debug, Clone, Default)]
pub struct RouteTemplater {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    segments: Vec<Segment>,
    /// Ends in `/*`: matches any number of further segments.
    wildcard: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// What replaces an id-like segment.
const ID: &str = "{id}";

impl RouteTemplater {
    /// Validates user patterns such as `/users/{id}/orders/{order}` or
    /// `/static/*`; they are tried in order before the heuristic.
    ///
    /// # Errors
    /// A pattern not starting with `/`, with `*` other than as the whole
    /// last segment, or with a segment mixing braces and text.
    pub fn new(patterns: &[String]) -> Result<Self, RouteError> {
        let patterns = patterns.iter().map(|p| Pattern::parse(p)).collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// The route for `path` (no query expected; one is ignored if present).
    /// The first matching user pattern is returned as written; otherwise
    /// the path with id-like segments replaced by `{id}`.
    pub fn route<'a>(&'a self, path: &'a str) -> Cow<'a, str> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        if path.is_empty() || path == "/" {
            return Cow::Borrowed("/");
        }
        if !self.patterns.is_empty() {
            let segments = path_segments(path);
            if let Some(p) = self.patterns.iter().find(|p| p.matches(&segments)) {
                return Cow::Borrowed(&p.text);
            }
        }
        templated(path)
    }
}

impl Pattern {
    fn parse(text: &str) -> Result<Self, RouteError> {
        if !text.starts_with('/') {
            return Err(RouteError::NotAbsolute(text.to_owned()));
        }
        let mut raw = path_segments(text);
        let wildcard = raw.last() == Some(&"*");
        if wildcard {
            raw.pop();
        }
        let segments = raw.into_iter().map(|s| Self::segment(text, s)).collect::<Result<_, _>>()?;
        Ok(Self { text: text.to_owned(), segments, wildcard })
    }

    fn segment(pattern: &str, s: &str) -> Result<Segment, RouteError> {
        if s.contains('*') {
            return Err(RouteError::MisplacedWildcard(pattern.to_owned()));
        }
        if !s.contains(['{', '}']) {
            return Ok(Segment::Literal(s.to_owned()));
        }
        let name = s.strip_prefix('{').and_then(|r| r.strip_suffix('}'));
        match name {
            Some(n) if !n.is_empty() && !n.contains(['{', '}']) => Ok(Segment::Param),
            _ => Err(RouteError::BadParameter { pattern: pattern.to_owned(), segment: s.to_owned() }),
        }
    }

    fn matches(&self, path: &[&str]) -> bool {
        let fixed = self.segments.len();
        let len_ok = if self.wildcard { path.len() >= fixed } else { path.len() == fixed };
        len_ok
            && self.segments.iter().zip(path).all(|(seg, p)| match seg {
                Segment::Literal(l) => l == p,
                // A parameter stands for one real segment, never an empty one.
                Segment::Param => !p.is_empty(),
            })
    }
}

/// Segments after the leading `/`, ignoring one trailing `/` so that
/// `/users/1/` matches the pattern `/users/{id}`.
fn path_segments(path: &str) -> Vec<&str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() { Vec::new() } else { trimmed.split('/').collect() }
}

/// The heuristic template: `/` separators, empty segments and a trailing
/// slash are kept exactly; only id-like segments change.
fn templated(path: &str) -> Cow<'_, str> {
    if !path.split('/').any(looks_like_id) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if looks_like_id(seg) { ID } else { seg });
    }
    Cow::Owned(out)
}

/// Conservative: a false `{id}` merges distinct routes, a missed one only
/// adds cardinality, so only unmistakable ids are replaced.
fn looks_like_id(seg: &str) -> bool {
    !seg.is_empty()
        && (seg.bytes().all(|b| b.is_ascii_digit())
            || is_uuid(seg)
            || (seg.len() >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit()))
            || is_opaque_token(seg))
}

/// 8-4-4-4-12 hex digits, any case.
fn is_uuid(seg: &str) -> bool {
    let b = seg.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A long base64url token mixing letters and digits (session ids, nanoids,
/// API object ids). Pure words and short slugs do not qualify.
fn is_opaque_token(seg: &str) -> bool {
    seg.len() >= 20
        && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && seg.bytes().any(|b| b.is_ascii_digit())
        && seg.bytes().any(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templater(patterns: &[&str]) -> RouteTemplater {
        let owned: Vec<String> = patterns.iter().map(|s| (*s).to_owned()).collect();
        RouteTemplater::new(&owned).expect("valid patterns")
    }

    #[test]
    fn root_and_empty() {
        let t = templater(&[]);
        assert_eq!(t.route(""), "/");
        assert_eq!(t.route("/"), "/");
        assert_eq!(t.route("/?a=1"), "/");
    }

    #[test]
    fn digits() {
        let t = templater(&[]);
        assert_eq!(t.route("/users/42"), "/users/{id}");
        assert_eq!(t.route("/users/42/orders/7/"), "/users/{id}/orders/{id}/");
        assert_eq!(t.route("/v1/items"), "/v1/items");
        assert_eq!(t.route("/2024-01-01"), "/2024-01-01");
    }

    #[test]
    fn uuids() {
        let t = templater(&[]);
        assert_eq!(t.route("/o/123e4567-e89b-12d3-a456-426614174000"), "/o/{id}");
        assert_eq!(t.route("/o/123E4567-E89B-12D3-A456-426614174000/x"), "/o/{id}/x");
        assert!(!is_uuid("123e4567e89b-12d3-a456-4266141740000"), "dashes misplaced");
        assert!(!is_uuid("123e4567-e89b-12d3-a456-42661417400g"), "non-hex");
        assert!(!is_uuid("123e4567-e89b-12d3-a456-4266141740000"), "too long");
    }

    #[test]
    fn long_hex() {
        let t = templater(&[]);
        assert_eq!(t.route("/blob/deadbeefcafebabe"), "/blob/{id}");
        assert_eq!(t.route("/commit/0AF7651916CD43DD8448EB211C80319C"), "/commit/{id}");
        assert_eq!(t.route("/blob/deadbeefcafebab"), "/blob/deadbeefcafebab", "15 chars");
        assert_eq!(t.route("/feed/facade"), "/feed/facade");
    }

    #[test]
    fn opaque_tokens() {
        let t = templater(&[]);
        assert_eq!(t.route("/s/V1StGXR8_Z5jdHi6B-myT"), "/s/{id}");
        assert_eq!(t.route("/p/pi_3MtwBwLkdIwHu7ix28a3tqPa"), "/p/{id}");
        assert_eq!(t.route("/docs/getting-started-guide"), "/docs/getting-started-guide", "no digit");
        assert_eq!(t.route("/a/abc123"), "/a/abc123", "too short");
        assert_eq!(t.route("/a/12345678901234567890x.y"), "/a/12345678901234567890x.y", "not base64url");
    }

    #[test]
    fn separators_kept() {
        let t = templater(&[]);
        assert_eq!(t.route("/a//1"), "/a//{id}");
        assert_eq!(t.route("/files/"), "/files/");
        assert_eq!(t.route("*"), "*");
    }

    #[test]
    fn user_patterns_first_match_wins() {
        let t = templater(&["/users/{id}/orders/{order}", "/users/{user}", "/users/me", "/static/*"]);
        assert_eq!(t.route("/users/42/orders/abc"), "/users/{id}/orders/{order}");
        assert_eq!(t.route("/users/alice"), "/users/{user}");
        assert_eq!(t.route("/users/me"), "/users/{user}", "earlier pattern wins");
        assert_eq!(t.route("/users/alice/"), "/users/{user}", "trailing slash tolerated");
        assert_eq!(t.route("/static/css/site.css"), "/static/*");
        assert_eq!(t.route("/static"), "/static/*");
        assert_eq!(t.route("/users//orders/1"), "/users//orders/{id}", "params need a segment");
        assert_eq!(t.route("/users/42/orders"), "/users/{id}/orders", "falls back to the heuristic");
        assert_eq!(t.route("/Users/42"), "/Users/{id}", "literals are case-sensitive");
    }

    #[test]
    fn root_pattern_and_wildcard_everything() {
        let t = templater(&["/"]);
        assert_eq!(t.route("/x/1"), "/x/{id}");
        let t = templater(&["/*"]);
        assert_eq!(t.route("/x/1"), "/*");
    }

    #[test]
    fn bad_patterns() {
        let bad = |p: &str| RouteTemplater::new(&[p.to_owned()]).expect_err(p);
        assert_eq!(bad("users/{id}"), RouteError::NotAbsolute("users/{id}".into()));
        assert!(matches!(bad("/a/*/b"), RouteError::MisplacedWildcard(_)));
        assert!(matches!(bad("/a/x*"), RouteError::MisplacedWildcard(_)));
        assert!(matches!(bad("/a/{}"), RouteError::BadParameter { .. }));
        assert!(matches!(bad("/a/{id"), RouteError::BadParameter { .. }));
        assert!(matches!(bad("/a/x{id}"), RouteError::BadParameter { .. }));
        assert!(matches!(bad("/a/{{id}}"), RouteError::BadParameter { .. }));
        assert!(bad("").to_string().contains("must start with '/'"));
    }
}
