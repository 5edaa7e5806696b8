//! Client-to-server side: request heads start exchanges; bodies are skipped.

use std::sync::Arc;

use super::super::body::{BodyReader, Feed, Gap};
use super::super::head;
use super::super::headbuf::HeadStep;
use super::super::{ExchangeError, Http1Event, RequestHead, Ts, looks_like_request};
use super::{Http1Session, MAX_HEAD_BYTES, MAX_PENDING, Pending, ReqState};

impl Http1Session {
    pub(super) fn request_step(&mut self, data: &[u8], ts: Ts, at_start: bool, out: &mut Vec<Http1Event>) -> usize {
        match &mut self.req_state {
            ReqState::Resync => {
                if at_start && looks_like_request(data) {
                    self.req_state = ReqState::Head;
                    0
                } else {
                    data.len()
                }
            }
            ReqState::Body { abandonable: true, .. } if at_start && looks_like_request(data) => {
                // The client took the final response as a refusal and sent
                // its next request instead of the body.
                self.req_state = ReqState::Head;
                0
            }
            ReqState::Body { seq, body, .. } => {
                let seq = *seq;
                match body.feed(data) {
                    Feed::NeedMore => {
                        self.touch_request(seq, ts, None);
                        data.len()
                    }
                    Feed::Done { consumed } => {
                        let size = body.size();
                        self.req_state = ReqState::Head;
                        self.touch_request(seq, ts, Some(size));
                        consumed
                    }
                    Feed::Invalid => {
                        self.request_body_lost(seq, ts);
                        self.request_resync();
                        data.len()
                    }
                }
            }
            ReqState::Head => self.request_head_step(data, ts, out),
        }
    }

    fn request_head_step(&mut self, data: &[u8], ts: Ts, out: &mut Vec<Http1Event>) -> usize {
        match self.req_head.feed(data, ts, MAX_HEAD_BYTES, head::parse_request) {
            HeadStep::NeedMore => data.len(),
            HeadStep::Complete { consumed, head, first } => {
                self.start_request(head, first, ts, out);
                consumed
            }
            HeadStep::TooLarge => {
                self.request_cut(ts, true, out);
                data.len()
            }
            HeadStep::Invalid => {
                self.req_head.clear();
                if self.seen_message {
                    self.request_resync();
                } else {
                    self.broken = true;
                }
                data.len()
            }
        }
    }

    /// Registers a complete request head and starts skipping its body.
    fn start_request(&mut self, head: RequestHead, first: Ts, last: Ts, out: &mut Vec<Http1Event>) {
        let body = BodyReader::new(head::request_body(&head));
        let body_size = if body.is_none() { Some(0) } else { None };
        let seq = self.push_request(head, first, last, body_size, out);
        if let Some(body) = body {
            self.req_state = ReqState::Body { seq, body, abandonable: false };
        }
    }

    /// Emits `RequestStarted` and queues the request for its response.
    fn push_request(
        &mut self,
        head: RequestHead,
        first: Ts,
        last: Ts,
        body_size: Option<u64>,
        out: &mut Vec<Http1Event>,
    ) -> u64 {
        self.seen_message = true;
        let seq = self.next_seq;
        self.next_seq += 1;
        // With other requests in flight, one lost during resync would shift
        // the FIFO pairing onto this one.
        let suspect = self.req_lost && !self.pending.is_empty();
        self.req_lost = false;
        if self.pending.len() >= MAX_PENDING
            && let Some(old) = self.pending.pop_front()
        {
            out.push(Http1Event::Exchange(old.into_exchange(None, Some(ExchangeError::Desync), None)));
        }
        let head = Arc::new(head);
        out.push(Http1Event::RequestStarted { seq, head: Arc::clone(&head), first });
        self.pending.push_back(Pending {
            seq,
            request_truncated: !head.complete,
            head,
            first,
            last,
            body_size,
            suspect,
            response: None,
            response_first: None,
            response_last: None,
            response_truncated: false,
        });
        seq
    }

    /// The buffered head was cut (gap or size bound): report what it showed,
    /// then resync because its end is unknown.
    fn request_cut(&mut self, ts: Ts, proves_not_http: bool, out: &mut Vec<Http1Event>) {
        match self.req_head.take_cut(head::cut_request) {
            Some((head, first)) => {
                self.push_request(head, first, ts, None, out);
            }
            None if proves_not_http && !self.seen_message => {
                self.broken = true;
                return;
            }
            None => {}
        }
        self.request_resync();
    }

    pub(super) fn request_gap(&mut self, n: u64, ts: Ts, out: &mut Vec<Http1Event>) {
        match &mut self.req_state {
            ReqState::Resync => {}
            ReqState::Head if self.req_head.is_started() => self.request_cut(ts, false, out),
            // The next message began inside the gap.
            ReqState::Head => self.request_resync(),
            ReqState::Body { seq, body, .. } => {
                let seq = *seq;
                match body.gap(n) {
                    Gap::Absorbed => self.touch_request(seq, ts, None),
                    Gap::Done { spill } => {
                        let size = body.size();
                        self.req_state = ReqState::Head;
                        self.touch_request(seq, ts, Some(size));
                        if spill > 0 {
                            self.request_resync();
                        }
                    }
                    Gap::Lost => {
                        self.request_body_lost(seq, ts);
                        self.request_resync();
                    }
                }
            }
        }
    }

    fn request_resync(&mut self) {
        self.req_state = ReqState::Resync;
        self.req_head.clear();
        self.req_lost = true;
    }

    fn pending_mut(&mut self, seq: u64) -> Option<&mut Pending> {
        // The request being read is nearly always the newest.
        self.pending.iter_mut().rev().find(|p| p.seq == seq)
    }

    fn touch_request(&mut self, seq: u64, ts: Ts, body_done: Option<u64>) {
        if let Some(p) = self.pending_mut(seq) {
            p.last = ts;
            if body_done.is_some() {
                p.body_size = body_done;
            }
        }
    }

    fn request_body_lost(&mut self, seq: u64, ts: Ts) {
        if let Some(p) = self.pending_mut(seq) {
            p.last = ts;
            p.request_truncated = true;
        }
    }
}
