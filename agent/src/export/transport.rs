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
use super::config::{OtlpConfig, OtlpProtocol};

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
    Http { client: reqwest::Client, endpoint: String, headers: reqwest::header::HeaderMap, json: bool },
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
                let channel = Endpoint::from_shared(config.endpoint.clone())
                    .map_err(|e| bad(e.to_string()))?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout)
                    .connect_lazy();
                let metadata = MetadataMap::from_headers(header_map(&config.headers)?);
                Client::Grpc { grpc: tonic::client::Grpc::new(channel), metadata }
            }
            OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
                let headers = header_map(&config.headers)?;
                let client = reqwest::Client::builder()
                    .timeout(config.timeout)
                    .build()
                    .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))?;
                let json = config.protocol == OtlpProtocol::HttpJson;
                Client::Http { client, endpoint: config.endpoint.clone(), headers, json }
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
                        message: format!("gRPC {:?}: {}", status.code(), status.message()),
                        retry_after: None,
                    }),
                }
            }
            Client::Http { client, endpoint, headers, json } => {
                let content_type = if *json { "application/json" } else { "application/x-protobuf" };
                let response = client
                    .post(endpoint.as_str())
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| SendError { message: format!("HTTP request failed: {e}"), retryable: true, retry_after: None })?;
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
}
