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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Grpc(tx)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
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

async fn serve_http(mut stream: TcpStream, tx: mpsc::UnboundedSender<Captured>) {
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
        let request = match header("content-type").as_deref() {
            Some("application/json") => serde_json::from_slice(&body).ok(),
            _ => ExportTraceServiceRequest::decode(body.as_slice()).ok(),
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

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0_u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
