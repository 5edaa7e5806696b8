//! `cargo xtask otlp-sink`: the benchmarks' OTLP/gRPC receiver. It counts
//! spans (and SERVER spans) per export request and decodes nothing else.
//! In a deployment the collector runs on another machine; on the 2-core
//! bench host the Python receiver's full decoding took a fifth of a core
//! from nginx and wrk at max rate, which no kspan change could win back.
//! Correctness of what kspan exports is the tests' job, against
//! tests/otlp_receiver.py.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::{Bytes, BytesMut};

#[derive(clap::Args)]
pub struct Options {
    /// TCP port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Gets one `{"batch_total":N,"batch_server":M}` line per export request.
    #[arg(long)]
    out: PathBuf,
    /// Written as `{"grpc":PORT,"pid":PID}` once the sink listens.
    #[arg(long)]
    ready_file: PathBuf,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(opts))
}

async fn serve(opts: &Options) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await.context("binding the sink's port")?;
    let port = listener.local_addr()?.port();
    // O_APPEND, one write per request: readers never see half a line.
    let out = OpenOptions::new().create(true).append(true).open(&opts.out)?;
    out.set_len(0)?;
    let out = Arc::new(Mutex::new(out));
    let partial = opts.ready_file.with_extension("partial");
    fs::write(&partial, format!("{{\"grpc\":{port},\"pid\":{}}}", std::process::id()))?;
    fs::rename(&partial, &opts.ready_file)?;
    loop {
        let (socket, _) = listener.accept().await?;
        let out = Arc::clone(&out);
        tokio::spawn(async move {
            if let Err(e) = connection(socket, out).await {
                eprintln!("otlp-sink: connection: {e:#}");
            }
        });
    }
}

async fn connection(socket: tokio::net::TcpStream, out: Arc<Mutex<File>>) -> anyhow::Result<()> {
    // A response is several small writes: with Nagle's algorithm the last
    // waits for the client's delayed ACK, and the exporter for it.
    socket.set_nodelay(true)?;
    let mut conn = h2::server::handshake(socket).await?;
    while let Some(request) = conn.accept().await {
        let (request, respond) = request?;
        let out = Arc::clone(&out);
        tokio::spawn(async move {
            if let Err(e) = export(request, respond, out).await {
                eprintln!("otlp-sink: export: {e:#}");
            }
        });
    }
    Ok(())
}

async fn export(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    out: Arc<Mutex<File>>,
) -> anyhow::Result<()> {
    let mut body = request.into_body();
    let mut message = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
        message.extend_from_slice(&chunk);
    }
    let counted = count_grpc(&message);
    if let Ok((total, server)) = counted {
        let line = format!("{{\"batch_total\":{total},\"batch_server\":{server}}}\n");
        out.lock().unwrap_or_else(|e| e.into_inner()).write_all(line.as_bytes())?;
    }
    let response = http::Response::builder().status(200).header("content-type", "application/grpc").body(())?;
    let mut stream = respond.send_response(response, false)?;
    let mut trailers = http::HeaderMap::new();
    match counted {
        Ok(_) => {
            // An empty ExportTraceServiceResponse: flag 0, length 0.
            stream.send_data(Bytes::from_static(&[0; 5]), false)?;
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        }
        Err(e) => {
            eprintln!("otlp-sink: bad request: {e:#}");
            trailers.insert("grpc-status", http::HeaderValue::from_static("3"));
        }
    }
    stream.send_trailers(trailers)?;
    Ok(())
}

/// (spans, SERVER spans) in a gRPC body of ExportTraceServiceRequest
/// messages (each: a compression flag byte, a 4-byte length, the message).
fn count_grpc(mut body: &[u8]) -> anyhow::Result<(u64, u64)> {
    let (mut total, mut server) = (0, 0);
    while !body.is_empty() {
        anyhow::ensure!(body.len() >= 5, "truncated gRPC message header");
        anyhow::ensure!(body[0] == 0, "compressed gRPC message");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let message = body.get(5..5 + len).context("truncated gRPC message")?;
        // request.resource_spans(1).scope_spans(2).spans(2).kind(6)
        for resource_spans in len_fields(message, 1)? {
            for scope_spans in len_fields(resource_spans, 2)? {
                for span in len_fields(scope_spans, 2)? {
                    total += 1;
                    // SPAN_KIND_SERVER = 2
                    server += u64::from(varint_field(span, 6)? == Some(2));
                }
            }
        }
        body = &body[5 + len..];
    }
    Ok((total, server))
}

/// A protobuf field: (number, wire type, varint value or payload).
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn fields(mut msg: &[u8]) -> impl Iterator<Item = anyhow::Result<(u64, Value<'_>)>> {
    std::iter::from_fn(move || {
        if msg.is_empty() {
            return None;
        }
        let field = (|| {
            let tag = varint(&mut msg)?;
            let value = match tag & 7 {
                0 => Value::Varint(varint(&mut msg)?),
                1 => Value::Bytes(take(&mut msg, 8)?),
                2 => {
                    let len = varint(&mut msg)? as usize;
                    Value::Bytes(take(&mut msg, len)?)
                }
                5 => Value::Bytes(take(&mut msg, 4)?),
                wire => anyhow::bail!("unsupported wire type {wire}"),
            };
            Ok((tag >> 3, value))
        })();
        if field.is_err() {
            msg = &[];
        }
        Some(field)
    })
}

/// Every length-delimited field `number` of `msg`.
fn len_fields(msg: &[u8], number: u64) -> anyhow::Result<Vec<&[u8]>> {
    let mut found = Vec::new();
    for field in fields(msg) {
        if let (n, Value::Bytes(bytes)) = field?
            && n == number
        {
            found.push(bytes);
        }
    }
    Ok(found)
}

/// The last varint field `number` of `msg` (protobuf: the last one wins).
fn varint_field(msg: &[u8], number: u64) -> anyhow::Result<Option<u64>> {
    let mut value = None;
    for field in fields(msg) {
        if let (n, Value::Varint(v)) = field?
            && n == number
        {
            value = Some(v);
        }
    }
    Ok(value)
}

fn varint(msg: &mut &[u8]) -> anyhow::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = msg.split_first().context("truncated varint")?;
        *msg = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    anyhow::bail!("varint longer than 10 bytes")
}

fn take<'a>(msg: &mut &'a [u8], len: usize) -> anyhow::Result<&'a [u8]> {
    anyhow::ensure!(msg.len() >= len, "field runs past its message");
    let (head, rest) = msg.split_at(len);
    *msg = rest;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(number: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2];
        let mut len = payload.len();
        while len >= 0x80 {
            out.push(len as u8 | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(payload);
        out
    }

    fn span(kind: u8) -> Vec<u8> {
        // trace_id (1), name (5), kind (6), start time (7, fixed64)
        let mut s = len_field(1, &[7; 16]);
        s.extend(len_field(5, b"GET /"));
        s.extend([6 << 3, kind]);
        s.push(7 << 3 | 1);
        s.extend([1; 8]);
        s
    }

    #[test]
    fn counts_spans_and_server_spans_across_messages() {
        let mut scope = len_field(1, &len_field(1, b"kspan"));
        for kind in [2, 3, 2] {
            scope.extend(len_field(2, &span(kind)));
        }
        let resource = len_field(1, &len_field(1, &[]));
        let request = len_field(1, &[resource, len_field(2, &scope)].concat());
        let mut body = Vec::new();
        for _ in 0..2 {
            body.push(0);
            body.extend((request.len() as u32).to_be_bytes());
            body.extend(&request);
        }
        assert_eq!(count_grpc(&body).unwrap(), (6, 4));
        assert!(count_grpc(&body[..body.len() - 1]).is_err(), "truncated");
        body[0] = 1;
        assert!(count_grpc(&body).is_err(), "compressed");
    }
}
