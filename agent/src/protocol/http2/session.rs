//! Per-connection state: a frame reader and an HPACK decoder per direction,
//! and the streams in flight.

use std::collections::BTreeMap;

use super::frame::{Frame, FrameReader, HeaderBlock};
use super::hpack::{Decoder, Field};
use super::stream::{ResponseFields, Stream, request_field, response_field};
use super::{Chunk, DEFAULT_MAX_FRAME_SIZE, Http2Error, Http2Event, RequestHeaders, chunk_gap, chunk_ts};

/// Most streams tracked at once. Servers commonly allow 100-250 concurrent
/// streams; beyond this the lowest (oldest) id is given up as `Evicted`.
pub const MAX_STREAMS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Client,
    Server,
}

/// One direction of the connection.
#[derive(Debug)]
struct Side {
    reader: FrameReader,
    /// Decodes the header blocks this side sends.
    hpack: Decoder,
    /// Largest frame this side may send (the other side's
    /// SETTINGS_MAX_FRAME_SIZE); `None` when unknown (mid-stream join).
    max_frame: Option<u32>,
    /// This side's framing was ever guessed (mid-stream join or resync):
    /// violations are then blamed on the capture, not the peer.
    lenient: bool,
}

impl Side {
    fn new(from_client: bool, mid_stream: bool) -> Self {
        Self {
            reader: FrameReader::new(from_client, mid_stream),
            hpack: Decoder::new(mid_stream),
            max_frame: (!mid_stream).then_some(DEFAULT_MAX_FRAME_SIZE),
            lenient: mid_stream,
        }
    }
}

/// HTTP/2 (h2c) parser for one TCP connection.
///
/// Chunks must be delivered in syscall order per direction; client and
/// server chunks in the order the syscalls happened.
#[derive(Debug)]
pub struct Http2Session {
    client: Side,
    server: Side,
    streams: BTreeMap<u32, Stream>,
    /// Highest client stream id seen opening a stream: ids only grow, so a
    /// HEADERS on a lower untracked id is trailers of a finished stream.
    last_client_stream: u32,
    evicted: u64,
    broken: bool,
    closed: bool,
}

impl Http2Session {
    /// `mid_stream`: kspan joined an existing connection (no preface will
    /// come; HPACK dynamic state unknown).
    pub fn new(mid_stream: bool) -> Self {
        Self {
            client: Side::new(true, mid_stream),
            server: Side::new(false, mid_stream),
            streams: BTreeMap::new(),
            last_client_stream: 0,
            evicted: 0,
            broken: false,
            closed: false,
        }
    }

    /// True once the connection proved not to be HTTP/2 or broke its
    /// framing rules; open streams were then reported and the caller should
    /// drop the session.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Streams given up because more than `MAX_STREAMS` were open.
    pub fn evicted_streams(&self) -> u64 {
        self.evicted
    }

    /// Streams in flight (at most `MAX_STREAMS`).
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Heap bytes held for partial frames and HPACK tables (bounded).
    #[cfg(test)]
    pub(super) fn buffered_bytes(&self) -> usize {
        self.client.reader.buffered_bytes()
            + self.server.reader.buffered_bytes()
            + self.client.hpack.table_bytes()
            + self.server.hpack.table_bytes()
    }

    /// Client-to-server bytes.
    pub fn on_client_bytes(&mut self, chunk: &Chunk<'_>) -> Vec<Http2Event> {
        self.on_bytes(Dir::Client, chunk)
    }

    /// Server-to-client bytes.
    pub fn on_server_bytes(&mut self, chunk: &Chunk<'_>) -> Vec<Http2Event> {
        self.on_bytes(Dir::Server, chunk)
    }

    /// Connection closed (`reset` for RST/error). Streams still open end as
    /// errored exchanges, except those whose response had completed. Later
    /// calls produce nothing.
    pub fn on_close(&mut self, ts_ns: u64, reset: bool) -> Vec<Http2Event> {
        if self.closed {
            return Vec::new();
        }
        self.closed = true;
        let err = if reset { Http2Error::ConnectionReset } else { Http2Error::ConnectionClosed };
        std::mem::take(&mut self.streams)
            .into_iter()
            .map(|(id, s)| {
                let error = (!s.resp_ended).then_some(err);
                Http2Event::Exchange(s.into_exchange(id, error, Some(ts_ns)))
            })
            .collect()
    }

    fn on_bytes(&mut self, dir: Dir, chunk: &Chunk<'_>) -> Vec<Http2Event> {
        let mut out = Vec::new();
        if self.broken || self.closed {
            return out;
        }
        let ts = chunk_ts(chunk);
        let mut frames = Vec::new();
        let side = self.side(dir);
        side.reader.feed(chunk.data, ts, side.max_frame, &mut frames);
        side.reader.gap(chunk_gap(chunk), ts, &mut frames);
        for f in frames {
            self.on_frame(dir, f, &mut out);
            if self.broken {
                break;
            }
        }
        out
    }

    fn side(&mut self, dir: Dir) -> &mut Side {
        match dir {
            Dir::Client => &mut self.client,
            Dir::Server => &mut self.server,
        }
    }

    fn on_frame(&mut self, dir: Dir, f: Frame, out: &mut Vec<Http2Event>) {
        match f {
            Frame::Headers(b) if dir == Dir::Client => self.request_block(b, out),
            Frame::Headers(b) => self.response_block(b, out),
            Frame::Data { stream, end_stream, body, first, last } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return;
                };
                if dir == Dir::Client {
                    s.req_body += body;
                    s.req_last = last;
                    s.req_ended |= end_stream;
                } else {
                    s.resp_first.get_or_insert(first);
                    s.resp_last = Some(last);
                    s.resp_body += body;
                    s.resp_ended |= end_stream;
                }
                self.finish_if_done(stream, out);
            }
            Frame::Reset { stream, code, ts } => {
                let Some(mut s) = self.streams.remove(&stream) else {
                    return;
                };
                if dir == Dir::Client {
                    s.req_last = ts;
                } else {
                    s.resp_first.get_or_insert(ts);
                    s.resp_last = Some(ts);
                }
                s.reset = code;
                s.truncated |= code.is_none();
                // NO_ERROR after a complete response only stops the rest of
                // the request body (RFC 9113 §8.1).
                let error = (code != Some(0) || !s.resp_ended).then_some(Http2Error::StreamReset);
                out.push(Http2Event::Exchange(s.into_exchange(stream, error, None)));
            }
            Frame::GoAway { last_stream } if dir == Dir::Server => {
                // Streams above `last_stream` were never processed; one that
                // somehow got a response is left to finish normally.
                let refused: Vec<u32> = self
                    .streams
                    .range(last_stream.saturating_add(1)..)
                    .filter(|(_, s)| s.resp_first.is_none())
                    .map(|(&id, _)| id)
                    .collect();
                for id in refused {
                    if let Some(s) = self.streams.remove(&id) {
                        out.push(Http2Event::Exchange(s.into_exchange(id, Some(Http2Error::GoAway), None)));
                    }
                }
            }
            // A client GOAWAY concerns server-initiated (pushed) streams.
            Frame::GoAway { .. } => {}
            Frame::Settings { header_table_size, max_frame_size } => {
                // A side's settings bound what the *other* side sends.
                let peer = self.side(if dir == Dir::Client { Dir::Server } else { Dir::Client });
                if let Some(size) = header_table_size {
                    peer.hpack.allow_table_size(size);
                }
                if let Some(max) = max_frame_size {
                    // Until acknowledged the old limit applies too: keep the larger.
                    peer.max_frame = peer.max_frame.map(|m| m.max(max)).or(Some(max));
                }
            }
            Frame::Lost => self.lost(dir, out),
            Frame::Broken(e) => {
                tracing::debug!(error = %e, ?dir, "HTTP/2 framing broken");
                self.break_connection(out);
            }
        }
    }

    /// Decodes a block with `dir`'s decoder; `Some(complete)`, or `None` when the connection is
    /// broken (an HPACK error on a direction read from its start).
    fn decode(&mut self, dir: Dir, b: &HeaderBlock, mut f: impl FnMut(Field<'_>)) -> Option<bool> {
        let side = self.side(dir);
        let mut complete = !b.cut;
        match side.hpack.decode(&b.buf, b.cut, &mut f) {
            Ok(()) => {}
            // A peer sending bad HPACK kills its connection (COMPRESSION_ERROR).
            Err(e) if !side.lenient => {
                tracing::debug!(error = %e, ?dir, "HPACK decoding failed");
                return None;
            }
            Err(_) => {
                side.hpack.poison();
                complete = false;
            }
        }
        if b.cut {
            // The rest of the block may have updated the table.
            side.hpack.poison();
        }
        Some(complete)
    }

    fn request_block(&mut self, b: HeaderBlock, out: &mut Vec<Http2Event>) {
        let mut req = RequestHeaders { complete: true, ..RequestHeaders::default() };
        let mut host = None;
        let Some(complete) = self.decode(Dir::Client, &b, |f| request_field(&mut req, &mut host, f)) else {
            return self.break_connection(out);
        };
        req.complete &= complete;
        if req.authority.is_none() {
            req.authority = host;
        }
        let id = b.stream;
        if let Some(s) = self.streams.get_mut(&id) {
            // Request trailers.
            s.req_last = b.last;
            s.req_ended |= b.end_stream;
            s.truncated |= b.gap;
            return self.finish_if_done(id, out);
        }
        let has_pseudo = req.method.is_some() || req.path.is_some() || req.scheme.is_some();
        // Trailers always carry END_STREAM; a new request without END_STREAM
        // needs no pseudo-header evidence.
        let is_request = !b.end_stream || has_pseudo || b.cut;
        if id.is_multiple_of(2) || id <= self.last_client_stream || !is_request {
            return;
        }
        self.last_client_stream = id;
        let mut s = Stream::new(req.clone(), b.first, b.last);
        s.req_ended = b.end_stream;
        s.truncated = b.gap;
        self.streams.insert(id, s);
        out.push(Http2Event::StreamStarted { stream_id: id, request: req, first: b.first });
        if self.streams.len() > MAX_STREAMS
            && let Some((old, s)) = self.streams.pop_first()
        {
            self.evicted += 1;
            out.push(Http2Event::Exchange(s.into_exchange(old, Some(Http2Error::Evicted), None)));
        }
    }

    fn response_block(&mut self, b: HeaderBlock, out: &mut Vec<Http2Event>) {
        let mut fields = ResponseFields { complete: true, ..ResponseFields::default() };
        // PUSH_PROMISE blocks are decoded only to keep the table in step.
        let Some(complete) = self.decode(Dir::Server, &b, |f| {
            if !b.push {
                response_field(&mut fields, f);
            }
        }) else {
            return self.break_connection(out);
        };
        fields.complete &= complete;
        if b.push {
            return;
        }
        let Some(s) = self.streams.get_mut(&b.stream) else {
            return;
        };
        s.resp_first.get_or_insert(b.first);
        s.resp_last = Some(b.last);
        s.truncated |= b.gap;
        s.response_headers(fields, b.end_stream);
        s.resp_ended |= b.end_stream;
        self.finish_if_done(b.stream, out);
    }

    /// Bytes of `dir` were lost: any open stream may have lost frames, and
    /// the HPACK table is unknown.
    fn lost(&mut self, dir: Dir, out: &mut Vec<Http2Event>) {
        let side = self.side(dir);
        side.hpack.poison();
        side.lenient = true;
        for s in self.streams.values_mut() {
            s.truncated = true;
            if dir == Dir::Client {
                s.req_lost = true;
            }
        }
        let done: Vec<u32> = self.streams.iter().filter(|(_, s)| s.done()).map(|(&id, _)| id).collect();
        for id in done {
            self.finish_if_done(id, out);
        }
    }

    /// The connection broke HTTP/2 rules: report every open stream and stop.
    fn break_connection(&mut self, out: &mut Vec<Http2Event>) {
        self.broken = true;
        for (id, s) in std::mem::take(&mut self.streams) {
            out.push(Http2Event::Exchange(s.into_exchange(id, Some(Http2Error::Protocol), None)));
        }
    }

    fn finish_if_done(&mut self, id: u32, out: &mut Vec<Http2Event>) {
        if self.streams.get(&id).is_some_and(Stream::done)
            && let Some(s) = self.streams.remove(&id)
        {
            out.push(Http2Event::Exchange(s.into_exchange(id, None, None)));
        }
    }
}
