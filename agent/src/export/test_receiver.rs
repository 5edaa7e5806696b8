//! Minimal in-process OTLP receivers (gRPC with tonic, HTTP on raw tokio
//! TCP) that hand every decoded request to the test.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One request as the receiver saw it.
#[derive(Debug)]
pub(crate) struct Captured {
    /// HTTP path (gRPC: empty).
    pub path: String,
    /// Lower-case header names with their values.
    pub headers: Vec<(String, String)>,
    /// Raw HTTP body (gRPC: empty).
    pub body: Vec<u8>,
    pub request: ExportTraceServiceRequest,
}

impl Captured {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) struct Receiver {
    rx: mpsc::UnboundedReceiver<Captured>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Next request, or `None` if none arrives within `wait`.
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<Captured> {
        tokio::time::timeout(wait, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Grpc(mpsc::UnboundedSender<Captured>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let _ = self.0.send(Captured {
            path: String::new(),
            headers,
            body: Vec::new(),
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

pub(crate) fn grpc(listener: TcpListener) -> Receiver {
    grpc_with(listener, None)
}

/// Serves TLS with `tls`'s server certificate and, when it names a client
/// CA, demands a client certificate signed by it.
pub(crate) fn grpc_tls(listener: TcpListener, tls: &ServerTls) -> Receiver {
    let mut config = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem));
    if let Some(ca) = &tls.client_ca_pem {
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
    }
    grpc_with(listener, Some(config))
}

fn grpc_with(listener: TcpListener, tls: Option<tonic::transport::ServerTlsConfig>) -> Receiver {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).expect("server TLS config");
        }
        let service = TraceServiceServer::new(Grpc(tx))
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let _ = server
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    Receiver { rx, task }
}

/// A TLS receiver's certificate and key, and the CA its clients must
/// present a certificate from (none: no client certificate asked for).
pub(crate) struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: Option<String>,
}

/// OTLP/HTTP over TLS: like [`http`].
pub(crate) fn https(listener: TcpListener, tls: &ServerTls) -> Receiver {
    use super::tls::{certificates, private_key};
    let certs = certificates(tls.cert_pem.as_bytes()).expect("server certificate");
    let key = private_key(tls.key_pem.as_bytes()).expect("server key");
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(std::sync::Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match &tls.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca.as_bytes()).expect("client CA") {
                roots.add(cert).expect("client CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).expect("server TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            conns.push(AbortOnDrop(tokio::spawn(async move {
                // A client that does not trust us, or that we do not
                // trust, fails the handshake: nothing is captured.
                if let Ok(stream) = acceptor.accept(stream).await {
                    serve_http(stream, tx).await;
                }
            })));
        }
    });
    Receiver { rx, task }
}

/// Accepts OTLP/HTTP with protobuf or JSON bodies; answers 200 to each.
pub(crate) fn http(listener: TcpListener) -> Receiver {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.push(AbortOnDrop(tokio::spawn(serve_http(stream, tx.clone()))));
        }
    });
    Receiver { rx, task }
}

/// Connection tasks die with the accept loop, which a test aborts.
struct AbortOnDrop(JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, tx: mpsc::UnboundedSender<Captured>) {
    let mut buf = Vec::new();
    loop {
        let (head_len, path, headers) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut slots);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    break (n, req.path.unwrap_or_default().to_owned(), headers);
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return,
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_len + len {
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..head_len + len).skip(head_len).collect();
        let plain = match header("content-encoding").as_deref() {
            Some("gzip") => {
                let mut plain = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body.as_slice()), &mut plain)
                    .ok()
                    .map(|_| plain)
            }
            None => Some(body.clone()),
            Some(_) => None,
        };
        let request = match (plain, header("content-type").as_deref()) {
            (None, _) => None,
            (Some(plain), Some("application/json")) => serde_json::from_slice(&plain).ok(),
            (Some(plain), _) => ExportTraceServiceRequest::decode(plain.as_slice()).ok(),
        };
        let (status, request) = match request {
            Some(r) => ("200 OK", Some(r)),
            None => ("400 Bad Request", None),
        };
        if let Some(request) = request {
            let _ = tx.send(Captured {
                path,
                headers: headers.clone(),
                body,
                request,
            });
        }
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0_u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
