//! Export settings, read from the standard `OTEL_*` environment variables.
//!
//! Parsing goes through a lookup function rather than `std::env` directly so
//! tests never mutate the process environment (unsafe in edition 2024, and
//! racy across parallel tests).

use std::time::Duration;

use super::headers::parse_headers;
use super::tls::TlsConfig;
use super::{ExportError, PrintMode};

/// kspan's default for `OTEL_BSP_SCHEDULE_DELAY`. The spec says 5000 ms, but
/// an agent someone just started is usually being watched: a second is short
/// enough to feel live and still batches well at high span rates.
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(1000);
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
pub const DEFAULT_MAX_EXPORT_BATCH_SIZE: usize = 512;
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(30_000);
pub const DEFAULT_OTLP_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Upper bound for every numeric variable: one day in ms, or 86.4 M spans.
const MAX_VALUE: u64 = 86_400_000;

/// OTLP wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc`: OTLP/gRPC (tonic).
    Grpc,
    /// `http/protobuf`: binary protobuf POSTed over HTTP (reqwest).
    HttpProtobuf,
    /// `http/json`: OTLP/JSON POSTed over HTTP (reqwest).
    HttpJson,
}

/// Request body compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    /// gzip: OTLP/HTTP `Content-Encoding: gzip`, gRPC `grpc-encoding: gzip`.
    /// Spans compress ~5-10x, for some CPU per span: worth it when the
    /// collector is across a metered or slow link.
    Gzip,
}

/// Where and how to send OTLP.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// Full target URL, used as-is: for HTTP it already ends in `/v1/traces`
    /// when it came from the generic `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    /// Wire protocol (`OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`, default `http/protobuf`).
    pub protocol: OtlpProtocol,
    /// Extra request headers / gRPC metadata, values already URL-decoded.
    /// Generic `OTEL_EXPORTER_OTLP_HEADERS` merged with the `_TRACES_` variant,
    /// which wins per key.
    pub headers: Vec<(String, String)>,
    /// Time limit of one OTLP request, and of the exporter's retries of it
    /// (`OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`, ms, default 10 000).
    pub timeout: Duration,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION`: `gzip` or `none` (default).
    pub compression: Compression,
    /// Trusted CAs and client identity for `https` endpoints
    /// (`OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`, `_CLIENT_CERTIFICATE`,
    /// `_CLIENT_KEY`); unused for `http` ones.
    pub tls: TlsConfig,
}

impl OtlpConfig {
    /// The TCP port the endpoint is reached on (the scheme's default when
    /// the URL names none).
    pub fn endpoint_port(&self) -> Option<u16> {
        let uri: http::Uri = self.endpoint.parse().ok()?;
        uri.port_u16().or(match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
            Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
            _ => None,
        })
    }
}

/// Header values are typically API keys: `{:?}` shows only their names, so
/// logging the configuration at start-up is safe.
impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("compression", &self.compression)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Everything the export stage needs; build it with [`ExportConfig::from_env`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportConfig {
    /// Printing on stdout as asked on the command line. `Auto` prints text
    /// only when no OTLP endpoint is configured.
    pub print: PrintMode,
    /// OTLP export; `None` when no endpoint variable is set.
    pub otlp: Option<OtlpConfig>,
    /// Spans that may wait for export; beyond this they are dropped and
    /// counted (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048).
    pub max_queue_size: usize,
    /// Longest a span waits before its batch is sent
    /// (`OTEL_BSP_SCHEDULE_DELAY`, ms, kspan default 1000, spec default 5000).
    pub schedule_delay: Duration,
    /// Spans per export batch (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default 512,
    /// capped at `max_queue_size` as the spec requires).
    pub max_export_batch_size: usize,
    /// Bound on exporting one batch, retries and all resources included, and
    /// on the final flush at shutdown (`OTEL_BSP_EXPORT_TIMEOUT`, ms, default 30 000).
    pub export_timeout: Duration,
}

impl ExportConfig {
    /// Reads the standard OTel variables from the process environment.
    pub fn from_env(print: PrintMode) -> Result<Self, ExportError> {
        // Lossy, not `env::var(..).ok()`: a non-UTF-8 value must fail
        // validation with the variable named, not pass as "unset".
        Self::from_lookup(print, |name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        })
    }

    /// Same as [`from_env`](Self::from_env) with variables from `lookup`.
    pub fn from_lookup(
        print: PrintMode,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ExportError> {
        // The spec treats an empty variable as unset.
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let max_queue_size =
            positive(&get, "OTEL_BSP_MAX_QUEUE_SIZE")?.unwrap_or(DEFAULT_MAX_QUEUE_SIZE as u64);
        // Both are at most MAX_VALUE, so the conversions cannot saturate.
        let max_queue_size = usize::try_from(max_queue_size).unwrap_or(usize::MAX);
        let batch = positive(&get, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")?
            .unwrap_or(DEFAULT_MAX_EXPORT_BATCH_SIZE as u64);
        let max_export_batch_size = usize::try_from(batch)
            .unwrap_or(usize::MAX)
            .min(max_queue_size);

        Ok(Self {
            print,
            otlp: otlp_config(&get)?,
            max_queue_size,
            schedule_delay: millis(&get, "OTEL_BSP_SCHEDULE_DELAY")?
                .unwrap_or(DEFAULT_SCHEDULE_DELAY),
            max_export_batch_size,
            export_timeout: millis(&get, "OTEL_BSP_EXPORT_TIMEOUT")?
                .unwrap_or(DEFAULT_EXPORT_TIMEOUT),
        })
    }
}

// Signal-specific variable first: it wins over the generic one.
const PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
const INSECURE_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
    "OTEL_EXPORTER_OTLP_INSECURE",
];
const COMPRESSION_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
];
const TIMEOUT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
];

fn otlp_config(get: &impl Fn(&str) -> Option<String>) -> Result<Option<OtlpConfig>, ExportError> {
    let protocol = match first(get, &PROTOCOL_VARS) {
        None => OtlpProtocol::HttpProtobuf,
        Some((var, value)) => match value.as_str() {
            "grpc" => OtlpProtocol::Grpc,
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            "http/json" => OtlpProtocol::HttpJson,
            _ => {
                return Err(invalid(
                    var,
                    &value,
                    "expected grpc, http/protobuf or http/json",
                ));
            }
        },
    };
    let (var, endpoint) = if let Some(ep) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ep)
    } else if let Some(ep) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
        // gRPC routes by service name, not by path, so only HTTP gets the
        // per-signal path appended (OTLP exporter spec, "Endpoint URLs").
        let ep = match protocol {
            OtlpProtocol::Grpc => ep,
            _ => format!("{}/v1/traces", ep.trim_end_matches('/')),
        };
        ("OTEL_EXPORTER_OTLP_ENDPOINT", ep)
    } else {
        return Ok(None);
    };
    let insecure = first(get, &INSECURE_VARS).is_some_and(|(_, v)| v.eq_ignore_ascii_case("true"));
    let endpoint = normalize_endpoint(var, endpoint, protocol, insecure)?;

    let mut headers = Vec::new();
    // Generic first, so the signal-specific variable wins per key.
    for var in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Some(value) = get(var) {
            for (k, v) in parse_headers(var, &value)? {
                headers.retain(|(old, _): &(String, String)| !old.eq_ignore_ascii_case(&k));
                headers.push((k, v));
            }
        }
    }
    let timeout = match first(get, &TIMEOUT_VARS) {
        None => DEFAULT_OTLP_TIMEOUT,
        Some((var, _)) => millis(get, var)?.unwrap_or(DEFAULT_OTLP_TIMEOUT),
    };
    let compression = match first(get, &COMPRESSION_VARS) {
        None => Compression::None,
        Some((var, value)) => match value.to_ascii_lowercase().as_str() {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            _ => return Err(invalid(var, &value, "expected gzip or none")),
        },
    };
    Ok(Some(OtlpConfig {
        endpoint,
        protocol,
        headers,
        timeout,
        compression,
        tls: TlsConfig::from_lookup(get)?,
    }))
}

fn normalize_endpoint(
    var: &str,
    endpoint: String,
    protocol: OtlpProtocol,
    insecure: bool,
) -> Result<String, ExportError> {
    let endpoint = match endpoint.split_once("://") {
        Some((scheme, _))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            endpoint
        }
        Some(_) => return Err(invalid(var, &endpoint, "scheme must be http or https")),
        // The spec lets gRPC endpoints omit the scheme; INSECURE picks it.
        None if protocol == OtlpProtocol::Grpc => {
            format!("{}://{endpoint}", if insecure { "http" } else { "https" })
        }
        None => {
            return Err(invalid(
                var,
                &endpoint,
                "expected a URL such as http://collector:4318",
            ));
        }
    };
    let rest = endpoint.split_once("://").map_or("", |(_, r)| r);
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(invalid(var, &endpoint, "missing or malformed host"));
    }
    Ok(endpoint)
}

fn first<'a>(get: &impl Fn(&str) -> Option<String>, vars: &[&'a str]) -> Option<(&'a str, String)> {
    vars.iter().find_map(|&var| get(var).map(|v| (var, v)))
}

fn positive(get: &impl Fn(&str) -> Option<String>, var: &str) -> Result<Option<u64>, ExportError> {
    let Some(value) = get(var) else {
        return Ok(None);
    };
    match value.parse::<u64>() {
        Ok(0) => Err(invalid(var, &value, "must be greater than 0")),
        // Far beyond any sane setting, and keeps deadline arithmetic
        // (`now + delay`) well away from overflow.
        Ok(n) if n > MAX_VALUE => Err(invalid(var, &value, format!("must be at most {MAX_VALUE}"))),
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(invalid(var, &value, "expected a positive integer")),
    }
}

fn millis(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
) -> Result<Option<Duration>, ExportError> {
    Ok(positive(get, var)?.map(Duration::from_millis))
}

pub(super) fn invalid(
    var: &str,
    value: impl std::fmt::Display,
    reason: impl Into<String>,
) -> ExportError {
    ExportError::InvalidEnv {
        var: var.to_owned(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
