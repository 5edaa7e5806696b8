//! Per-connection state: one reader per direction plus the FIFO of requests
//! waiting for their responses.

use std::{collections::VecDeque, sync::Arc};

use super::body::BodyReader;
use super::head;
use super::headbuf::HeadBuf;
use super::{Chunk, Exchange, ExchangeError, Http1Event, RequestHead, ResponseHead, Ts};

mod request;
mod response;

/// Largest header block buffered per direction; a longer one is reported
/// from its first lines (`complete: false`) and the stream resynchronises.
/// Both directions together thus buffer at most 64 KiB.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Most requests awaiting a response. Real clients pipeline a handful at
/// most; beyond this the oldest is given up as `Desync` to bound memory.
pub const MAX_PENDING: usize = 32;

/// A request whose exchange has not been emitted yet.
#[derive(Debug)]
struct Pending {
    seq: u64,
    head: Arc<RequestHead>,
    first: Ts,
    last: Ts,
    body_size: Option<u64>,
    request_truncated: bool,
    /// Requests may have been lost around this one, so its response may
    /// belong to another request.
    suspect: bool,
    response: Option<ResponseHead>,
    response_first: Option<Ts>,
    response_last: Option<Ts>,
    response_truncated: bool,
}

impl Pending {
    fn into_exchange(
        self,
        response_body_size: Option<u64>,
        error: Option<ExchangeError>,
        closed_ns: Option<u64>,
    ) -> Exchange {
        let error = error.or(if self.suspect {
            Some(ExchangeError::Desync)
        } else if self.request_truncated || self.response_truncated {
            Some(ExchangeError::Truncated)
        } else {
            None
        });
        Exchange {
            seq: self.seq,
            request: self.head,
            response: self.response,
            request_first: self.first,
            request_last: self.last,
            response_first: self.response_first,
            response_last: self.response_last,
            request_body_size: self.body_size,
            response_body_size,
            error,
            closed_ns,
        }
    }
}

#[derive(Debug)]
enum ReqState {
    Head,
    Body {
        seq: u64,
        body: BodyReader,
        /// The server answered an `Expect: 100-continue` request with a
        /// final status before any body byte: the client may skip the body.
        abandonable: bool,
    },
    /// Dropping bytes until a chunk starts like a request.
    Resync,
}

#[derive(Debug)]
enum RespState {
    Head,
    /// `seq` is `None` for a response no request was waiting for.
    Body {
        seq: Option<u64>,
        body: BodyReader,
    },
    /// Dropping bytes until a chunk starts like a response.
    Resync,
}

/// HTTP/1.x parser for one TCP connection.
///
/// Chunks must be delivered in syscall order per direction; request and
/// response chunks in the order the syscalls happened.
#[derive(Debug)]
pub struct Http1Session {
    req_state: ReqState,
    req_head: HeadBuf,
    /// Request bytes were dropped while resynchronising, so requests may be
    /// missing from `pending`.
    req_lost: bool,
    resp_state: RespState,
    resp_head: HeadBuf,
    /// The response head being read was found by resync, which may have
    /// been fooled by body bytes: failing to parse it is no news.
    resp_probing: bool,
    pending: VecDeque<Pending>,
    next_seq: u64,
    /// A valid message was seen: later garbage means lost sync, not "not HTTP".
    seen_message: bool,
    broken: bool,
    closed: bool,
}

impl Default for Http1Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Http1Session {
    /// A session for a connection whose next bytes start a message.
    pub fn new() -> Self {
        Self {
            req_state: ReqState::Head,
            req_head: HeadBuf::default(),
            req_lost: false,
            resp_state: RespState::Head,
            resp_head: HeadBuf::default(),
            resp_probing: false,
            pending: VecDeque::new(),
            next_seq: 0,
            seen_message: false,
            broken: false,
            closed: false,
        }
    }

    /// True once the stream proved not to be HTTP/1 (garbage before any
    /// valid message, or a protocol switch); the caller should drop the session.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Heap bytes held for partial header blocks (bounded by `2 * MAX_HEAD_BYTES`).
    #[cfg(test)]
    pub fn buffered_bytes(&self) -> usize {
        self.req_head.capacity() + self.resp_head.capacity()
    }

    /// Requests seen whose exchange has not been emitted yet (at most `MAX_PENDING`).
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Client-to-server bytes.
    pub fn on_request_bytes(&mut self, chunk: &Chunk<'_>) -> Vec<Http1Event> {
        self.feed(chunk, Self::request_step, Self::request_gap)
    }

    /// Server-to-client bytes.
    pub fn on_response_bytes(&mut self, chunk: &Chunk<'_>) -> Vec<Http1Event> {
        self.feed(chunk, Self::response_step, Self::response_gap)
    }

    /// Runs one direction's parser over a chunk, then accounts for the bytes
    /// the capture missed.
    fn feed(
        &mut self,
        chunk: &Chunk<'_>,
        step: fn(&mut Self, &[u8], Ts, bool, &mut Vec<Http1Event>) -> usize,
        gap: fn(&mut Self, u64, Ts, &mut Vec<Http1Event>),
    ) -> Vec<Http1Event> {
        let mut out = Vec::new();
        if self.broken || self.closed {
            return out;
        }
        let ts = chunk.ts();
        let mut data = chunk.data;
        let mut at_start = true;
        while !data.is_empty() && !self.broken {
            let used = step(self, data, ts, at_start, &mut out);
            if used == 0 && !at_start {
                break; // cannot happen; guards against a livelock on a logic slip
            }
            at_start = false;
            data = data.get(used..).unwrap_or_default();
        }
        let missed = chunk.gap();
        if missed > 0 && !self.broken {
            gap(self, missed, ts, &mut out);
        }
        out
    }

    /// Connection closed (`reset` for RST/error). A response delimited by
    /// the close completes; requests still waiting come out as errored
    /// exchanges. Later calls produce nothing.
    pub fn on_close(&mut self, ts_ns: u64, reset: bool) -> Vec<Http1Event> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        self.closed = true;
        let err = if reset { ExchangeError::ConnectionReset } else { ExchangeError::ConnectionClosed };
        let closed = Some(ts_ns);
        match std::mem::replace(&mut self.resp_state, RespState::Resync) {
            RespState::Body { seq: Some(seq), body } if body.until_close() => {
                // A reset may have cut the body; a clean close is its normal end.
                let error = reset.then_some(ExchangeError::ConnectionReset);
                self.finish_response(seq, Some(body.size()), error, closed, &mut out);
            }
            RespState::Body { seq: Some(seq), .. } => {
                self.finish_response(seq, None, Some(err), closed, &mut out);
            }
            RespState::Head => self.close_partial_response(),
            _ => {}
        }
        for p in self.pending.drain(..) {
            out.push(Http1Event::Exchange(p.into_exchange(None, Some(err), closed)));
        }
        self.req_head.clear();
        self.resp_head.clear();
        out
    }

    /// Keeps what a response head cut by the close showed (its start time
    /// and, if its status line arrived, its fields).
    fn close_partial_response(&mut self) {
        let Some(first) = self.resp_head.first() else {
            return;
        };
        let cut = self.resp_head.take_cut(head::cut_response);
        let Some(front) = self.front_for(first) else {
            return;
        };
        front.response_first.get_or_insert(first);
        if let Some((r, _)) = cut
            && !is_interim(r.head.status)
        {
            front.response = Some(r.head);
        }
    }

    /// Emits the exchange for `seq` if it is still the oldest waiting
    /// (it is gone if `MAX_PENDING` evicted it meanwhile).
    fn finish_response(
        &mut self,
        seq: u64,
        body_size: Option<u64>,
        error: Option<ExchangeError>,
        closed_ns: Option<u64>,
        out: &mut Vec<Http1Event>,
    ) {
        if self.pending.front().is_some_and(|p| p.seq == seq)
            && let Some(p) = self.pending.pop_front()
        {
            out.push(Http1Event::Exchange(p.into_exchange(body_size, error, closed_ns)));
        }
    }
}

/// Informational responses precede the final one; 101 is final (it ends HTTP/1).
fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}
