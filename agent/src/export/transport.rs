//! Sends an encoded OTLP request: gRPC through tonic, HTTP through reqwest,
//! retrying what the OTLP spec calls retryable until the batch deadline.

use std::time::Duration;

use bytes::{Buf, BufMut};
use rand::Rng;
use tokio::time::Instant;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use super::ExportError;
use super::config::{Compression, OtlpConfig, OtlpProtocol};

const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a request failed, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    /// The collector or the network may recover (OTLP spec: gRPC
    /// UNAVAILABLE and kin, HTTP 429/502/503/504, connection failures).
    pub retryable: bool,
    /// The server's `Retry-After`, when it gave one.
    pub retry_after: Option<Duration>,
}

enum Client {
    Grpc { grpc: tonic::client::Grpc<Channel>, metadata: MetadataMap },
    Http { client: reqwest::Client, endpoint: String, headers: reqwest::header::HeaderMap, json: bool, gzip: bool },
}

pub struct Transport {
    client: Client,
}

impl Transport {
    /// Needs a tokio runtime: the gRPC channel is created (lazily connected) here.
    pub fn new(config: &OtlpConfig) -> Result<Self, ExportError> {
        let bad = |reason: String| ExportError::InvalidEnv {
            var: "OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT".into(),
            value: config.endpoint.clone(),
            reason,
        };
        let client = match config.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
                    .map_err(|e| bad(e.to_string()))?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout);
                if is_https(&config.endpoint) {
                    endpoint = endpoint
                        .tls_config(config.tls.tonic_client_config())
                        .map_err(|e| bad(format!("cannot set up TLS: {e}")))?;
                }
                let metadata = MetadataMap::from_headers(header_map(&config.headers)?);
                let mut grpc = tonic::client::Grpc::new(endpoint.connect_lazy());
                if config.compression == Compression::Gzip {
                    grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                Client::Grpc { grpc, metadata }
            }
            OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
                let headers = header_map(&config.headers)?;
                // Built for http endpoints too: with `rustls-no-provider`,
                // reqwest panics building a client that has no TLS provider,
                // whatever the scheme it will be used for.
                let tls = config.tls.rustls_client_config().map_err(|e| bad(format!("cannot set up TLS: {e}")))?;
                let client = reqwest::Client::builder()
                    .timeout(config.timeout)
                    .tls_backend_preconfigured(tls)
                    .build()
                    .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))?;
                let json = config.protocol == OtlpProtocol::HttpJson;
                let gzip = config.compression == Compression::Gzip;
                Client::Http { client, endpoint: config.endpoint.clone(), headers, json, gzip }
            }
        };
        Ok(Self { client })
    }

    /// Whether requests must be OTLP/JSON rather than protobuf.
    pub fn wants_json(&self) -> bool {
        matches!(self.client, Client::Http { json: true, .. })
    }

    /// Sends `body`, retrying with jittered exponential backoff (or the
    /// server's `Retry-After`) while the error is retryable and `deadline`
    /// allows another attempt.
    pub async fn send(&mut self, body: bytes::Bytes, deadline: Instant) -> Result<(), SendError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let err = match self.send_once(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if !err.retryable {
                return Err(err);
            }
            let jitter = Duration::from_millis(rand::rng().random_range(0..100));
            let wait = err.retry_after.unwrap_or(backoff + jitter);
            if Instant::now() + wait >= deadline {
                return Err(err);
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn send_once(&mut self, body: bytes::Bytes) -> Result<(), SendError> {
        match &mut self.client {
            Client::Grpc { grpc, metadata } => {
                grpc.ready().await.map_err(|e| SendError {
                    message: format!("gRPC channel not ready: {e}"),
                    retryable: true,
                    retry_after: None,
                })?;
                let request = tonic::Request::from_parts(metadata.clone(), tonic::Extensions::default(), body);
                let path = http::uri::PathAndQuery::from_static(GRPC_EXPORT_PATH);
                match grpc.unary::<_, (), _>(request, path, RawCodec).await {
                    Ok(_) => Ok(()),
                    Err(status) => Err(SendError {
                        retryable: grpc_retryable(status.code()),
                        message: with_causes(
                            format!("gRPC {:?}: {}", status.code(), status.message()),
                            std::error::Error::source(&status),
                        ),
                        retry_after: None,
                    }),
                }
            }
            Client::Http { client, endpoint, headers, json, gzip } => {
                let content_type = if *json { "application/json" } else { "application/x-protobuf" };
                let mut request = client
                    .post(endpoint.as_str())
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, content_type);
                request = if *gzip {
                    request.header(reqwest::header::CONTENT_ENCODING, "gzip").body(gzip_body(&body))
                } else {
                    request.body(body)
                };
                let response = request
                    .send()
                    .await
                    .map_err(|e| SendError {
                        message: with_causes(format!("HTTP request failed: {e}"), std::error::Error::source(&e)),
                        retryable: true,
                        retry_after: None,
                    })?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Err(SendError {
                    message: format!("HTTP {status} from the collector"),
                    retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
                    retry_after,
                })
            }
        }
    }
}

/// `message` followed by the error's causes: a bare "transport error" does
/// not say that the collector's certificate was not trusted.
fn with_causes(mut message: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers often repeat their cause's text.
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    if message.contains("CaUsedAsEndEntity") {
        // `openssl req -x509` marks its certificates CA:TRUE by default,
        // which rustls refuses as a server's own certificate.
        message.push_str(
            " (the collector presents a CA certificate as its own: issue it from a CA, \
             or make it with basicConstraints=critical,CA:FALSE)",
        );
    }
    message
}

fn is_https(endpoint: &str) -> bool {
    endpoint.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// Compressed per attempt rather than once per batch: retries are rare, and
/// keeping the plain body lets the retry loop stay protocol-agnostic.
fn gzip_body(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    // Level 1: most of the size saving for a fraction of level 6's CPU, on
    // the repetitive attribute keys and values of a span batch.
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

/// The configured headers (`OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`), for
/// HTTP requests and, as gRPC metadata, for gRPC calls alike. Values are
/// typically API keys, so errors name the header, never its value.
fn header_map(headers: &[(String, String)]) -> Result<http::HeaderMap, ExportError> {
    let bad = |reason: String| ExportError::InvalidEnv {
        var: "OTEL_EXPORTER_OTLP_[TRACES_]HEADERS".into(),
        value: "<not shown>".into(),
        reason,
    };
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad(format!("{k:?} is not a valid header name")))?;
        let value = http::HeaderValue::from_str(v).map_err(|_| bad(format!("value of {k:?} is not a valid header value")))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// OTLP/gRPC: the codes a client may retry ("OTLP/gRPC Response").
fn grpc_retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Cancelled | DeadlineExceeded | ResourceExhausted | Aborted | OutOfRange | Unavailable | DataLoss)
}

/// Passes already-encoded protobuf through; the reply's partial-success
/// details are not needed, so its bytes are skipped.
#[derive(Clone, Copy)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: bytes::Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        let n = src.remaining();
        src.advance(n);
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_grpc_codes_are_retried() {
        assert!(grpc_retryable(tonic::Code::Unavailable));
        assert!(grpc_retryable(tonic::Code::ResourceExhausted));
        assert!(!grpc_retryable(tonic::Code::InvalidArgument));
        assert!(!grpc_retryable(tonic::Code::Unauthenticated));
        assert!(!grpc_retryable(tonic::Code::Unimplemented));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("transport error")]
    struct Transport(#[source] Certificate);

    #[derive(Debug, thiserror::Error)]
    #[error("invalid peer certificate: {0}")]
    struct Certificate(&'static str);

    #[test]
    fn failures_name_their_root_cause_once() {
        let err = Transport(Certificate("UnknownIssuer"));
        assert_eq!(
            with_causes("gRPC Unavailable: invalid peer certificate: UnknownIssuer".into(), Some(&err)),
            "gRPC Unavailable: invalid peer certificate: UnknownIssuer: transport error"
        );
        let err = Transport(Certificate("Other(OtherError(CaUsedAsEndEntity))"));
        let message = with_causes("HTTP request failed".into(), Some(&err));
        assert!(message.starts_with("HTTP request failed: transport error: invalid peer certificate: Other"), "{message}");
        assert!(message.contains("CA:FALSE"), "a hint at the usual cause: {message}");
    }
}
