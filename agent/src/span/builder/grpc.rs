//! gRPC spans, after the RPC semantic conventions: name
//! `package.Service/Method`, `rpc.*` attributes, status from `grpc-status`.

use crate::{
    conntrack::Connection,
    protocol::http2::StreamExchange,
    span::model::{Attr, SpanKind, SpanStatus},
};

use super::{Timing, network_attrs};

const DEADLINE_EXCEEDED: u32 = 4;

/// Status codes that make a SERVER span an error (OpenTelemetry gRPC
/// conventions); for CLIENT spans every non-OK code does.
fn server_error(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN_CODE")
}

/// `grpc-timeout` ("200m", "1S", "5000u"...) in nanoseconds.
fn timeout_ns(value: &str) -> Option<u64> {
    let (digits, unit) = value.trim().split_at(value.trim().len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    let per = match unit {
        "H" => 3_600_000_000_000,
        "M" => 60_000_000_000,
        "S" => 1_000_000_000,
        "m" => 1_000_000,
        "u" => 1_000,
        "n" => 1,
        _ => return None,
    };
    n.checked_mul(per)
}

/// The call's status code. A deadline is enforced by the client library,
/// which then resets the stream: on the wire there is no `grpc-status`, so
/// a reset at or after the call's `grpc-timeout` reads as DEADLINE_EXCEEDED.
fn status_code(ex: &StreamExchange, timing: &Timing) -> Option<u32> {
    if ex.grpc_status.is_some() {
        return ex.grpc_status;
    }
    let timeout = ex.request.grpc_timeout.as_deref().and_then(timeout_ns)?;
    let ended = timing.response_last.map(|t| t.exit_ns).or(timing.closed_ns).unwrap_or(timing.request_last.exit_ns);
    let elapsed = ended.saturating_sub(timing.request_first.enter_ns);
    (ex.reset.is_some() && reset_at_deadline(elapsed, timeout)).then_some(DEADLINE_EXCEEDED)
}

/// Whether a reset `elapsed` ns into a call came at its `timeout`. The
/// server's clock starts when it reads the request, later than the client's
/// by the request's transit and the server's scheduling: on a busy host,
/// milliseconds (a 1 ms margin missed deadlines under load).
fn reset_at_deadline(elapsed: u64, timeout: u64) -> bool {
    let margin = (timeout / 10).max(10_000_000);
    elapsed.saturating_add(margin) >= timeout
}

pub fn describe(conn: &Connection, kind: SpanKind, ex: &StreamExchange, timing: &Timing) -> (String, Vec<Attr>, SpanStatus) {
    let path = ex.request.path.as_deref().unwrap_or("");
    let full = path.trim_start_matches('/');
    let (service, method) = full.rsplit_once('/').unwrap_or((full, ""));
    let mut attrs = vec![
        Attr::new("rpc.system", "grpc"),
        Attr::new("rpc.service", service.to_owned()),
        Attr::new("rpc.method", method.to_owned()),
        Attr::new("network.protocol.name", "http"),
        Attr::new("network.protocol.version", "2"),
        Attr::new("network.transport", "tcp"),
    ];
    network_attrs(&mut attrs, conn, kind, ex.request.authority.as_deref());
    if let Some(ua) = &ex.request.user_agent {
        attrs.push(Attr::new("user_agent.original", ua.clone()));
    }
    let mut status = SpanStatus::Unset;
    match status_code(ex, timing) {
        Some(code) => {
            attrs.push(Attr::new("rpc.grpc.status_code", i64::from(code)));
            let failed = code != 0 && (kind == SpanKind::Client || server_error(code));
            if failed {
                attrs.push(Attr::new("error.type", code_name(code)));
                status = SpanStatus::Error { message: ex.grpc_message.clone().unwrap_or_default() };
            }
        }
        None if ex.reset.is_some() || ex.error.is_some() => {
            attrs.push(Attr::new("error.type", if ex.reset.is_some() { "stream_reset" } else { "connection_closed" }));
            status = SpanStatus::Error { message: "call ended without a grpc-status".to_owned() };
        }
        None => {}
    }
    if ex.partial {
        attrs.push(Attr::new("kspan.partial", true));
    }
    let name = if full.is_empty() { "grpc".to_owned() } else { full.to_owned() };
    (name, attrs, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(timeout_ns("200m"), Some(200_000_000));
        assert_eq!(timeout_ns("1S"), Some(1_000_000_000));
        assert_eq!(timeout_ns("5u"), Some(5_000));
        assert_eq!(timeout_ns("x"), None);
        assert_eq!(timeout_ns(""), None);
        assert_eq!(timeout_ns("99999999999999999H"), None);
    }

    #[test]
    fn resets_near_the_timeout_are_deadlines() {
        let ms = 1_000_000;
        // The server saw 200 ms of a 200 ms call start 6 ms late.
        assert!(reset_at_deadline(194 * ms, 200 * ms));
        assert!(reset_at_deadline(250 * ms, 200 * ms));
        assert!(!reset_at_deadline(150 * ms, 200 * ms), "a cancel well before the deadline");
        // Long deadlines get a tenth of themselves.
        assert!(reset_at_deadline(9_100 * ms, 10_000 * ms));
        assert!(!reset_at_deadline(8_000 * ms, 10_000 * ms));
    }

    #[test]
    fn server_errors_follow_the_conventions() {
        for code in [2, 4, 12, 13, 14, 15] {
            assert!(server_error(code), "{code}");
        }
        for code in [0, 1, 3, 5, 16] {
            assert!(!server_error(code), "{code}");
        }
        assert_eq!(code_name(5), "NOT_FOUND");
    }
}
