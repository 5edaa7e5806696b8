//! `--metrics-addr`: kspan's counters for Prometheus (`GET /metrics`) and a
//! liveness check for Kubernetes (`GET /healthz`), on a small HTTP/1.1
//! server of its own. The event loop publishes a rendered reading every
//! second; requests only copy it, so a scrape never waits on the loop and
//! cannot slow it down.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// How often the event loop publishes a reading.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// `/healthz` fails once the event loop has published nothing for this long:
/// it is stuck, and a restart is the remedy.
const STALE_AFTER: Duration = Duration::from_secs(15);
/// Scrapes served at once; more wait for a slot.
const MAX_CONNECTIONS: usize = 16;
/// A client gets this long to send its request head and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// The latest reading, shared between the event loop and the server.
#[derive(Clone)]
pub struct Published(Arc<Mutex<Reading>>);

struct Reading {
    prometheus: String,
    at: Instant,
}

impl Published {
    pub fn new(prometheus: String) -> Self {
        Self(Arc::new(Mutex::new(Reading { prometheus, at: Instant::now() })))
    }

    pub fn publish(&self, prometheus: String) {
        let mut reading = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *reading = Reading { prometheus, at: Instant::now() };
    }

    fn snapshot(&self) -> (String, Duration) {
        let reading = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (reading.prometheus.clone(), reading.at.elapsed())
    }
}

/// Binds `addr` now, so a port in use stops kspan at start-up, and serves
/// from a task of the current runtime (which the caller must be inside).
pub fn start(addr: SocketAddr, published: Published) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, _)) => {
                    let published = published.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(IO_TIMEOUT, serve(stream, &published)).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    // Out of fds, most likely: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(bound)
}

/// One request per connection, then close.
async fn serve(mut stream: TcpStream, published: &Published) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let path = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                if request.method != Some("GET") {
                    return respond(&mut stream, "405 Method Not Allowed", "text/plain", "only GET\n").await;
                }
                break request.path.unwrap_or("/").to_owned();
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => {}
            _ => return respond(&mut stream, "400 Bad Request", "text/plain", "bad request\n").await,
        }
    };
    let (prometheus, age) = published.snapshot();
    match path.split('?').next().unwrap_or("") {
        "/metrics" => respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &prometheus).await,
        "/healthz" if age <= STALE_AFTER => respond(&mut stream, "200 OK", "text/plain", "ok\n").await,
        "/healthz" => {
            let body = format!("event loop silent for {} s\n", age.as_secs());
            respond(&mut stream, "503 Service Unavailable", "text/plain", &body).await
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", "try /metrics or /healthz\n").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_the_published_reading_and_liveness() {
        let published = Published::new("kspan_spans_total 1\n".into());
        let addr = start("127.0.0.1:0".parse().unwrap(), published.clone()).unwrap();
        let metrics = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.ends_with("\r\n\r\nkspan_spans_total 1\n"), "{metrics}");
        published.publish("kspan_spans_total 2\n".into());
        // A request head split over two writes is still read whole.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /metrics?x=1 HTT").await.unwrap();
        stream.write_all(b"P/1.1\r\n\r\n").await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.ends_with("kspan_spans_total 2\n"), "{response}");
        assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await.ends_with("\r\n\r\nok\n"));
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 405"));
        assert!(get(addr, "\x01\x02 garbage\r\n\r\n").await.starts_with("HTTP/1.1 400"));
    }

    #[tokio::test]
    async fn a_silent_event_loop_fails_the_health_check() {
        let published = Published::new(String::new());
        published.0.lock().unwrap().at = Instant::now().checked_sub(STALE_AFTER + Duration::from_secs(1)).unwrap();
        let addr = start("127.0.0.1:0".parse().unwrap(), published).unwrap();
        let response = get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    }

    #[tokio::test]
    async fn a_port_in_use_is_an_error_at_start() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let result = start(taken.local_addr().unwrap(), Published::new(String::new()));
        assert!(result.is_err());
    }
}
