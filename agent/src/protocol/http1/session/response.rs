//! Server-to-client side: responses pair FIFO with waiting requests.

use super::super::body::{BodyReader, Feed, Gap};
use super::super::head::{self, ParsedResponse};
use super::super::headbuf::HeadStep;
use super::super::{ExchangeError, Http1Event, Ts, looks_like_response};
use super::{Http1Session, MAX_HEAD_BYTES, Pending, ReqState, RespState, is_interim};

impl Http1Session {
    pub(super) fn response_step(&mut self, data: &[u8], ts: Ts, at_start: bool, out: &mut Vec<Http1Event>) -> usize {
        match &mut self.resp_state {
            RespState::Resync => {
                if at_start && looks_like_response(data) {
                    self.resp_state = RespState::Head;
                    self.resp_probing = true;
                    0
                } else {
                    data.len()
                }
            }
            RespState::Body { seq, body } => {
                let seq = *seq;
                match body.feed(data) {
                    Feed::NeedMore => {
                        self.touch_response(seq, ts);
                        data.len()
                    }
                    Feed::Done { consumed } => {
                        let size = body.size();
                        self.resp_state = RespState::Head;
                        self.touch_response(seq, ts);
                        if let Some(seq) = seq {
                            self.finish_response(seq, Some(size), None, None, out);
                        }
                        consumed
                    }
                    Feed::Invalid => {
                        self.touch_response(seq, ts);
                        if let Some(seq) = seq {
                            let desync = Some(ExchangeError::Desync);
                            self.finish_response(seq, None, desync, None, out);
                        }
                        self.response_resync();
                        data.len()
                    }
                }
            }
            RespState::Head => self.response_head_step(data, ts, out),
        }
    }

    fn response_head_step(&mut self, data: &[u8], ts: Ts, out: &mut Vec<Http1Event>) -> usize {
        match self.resp_head.feed(data, ts, MAX_HEAD_BYTES, head::parse_response) {
            HeadStep::NeedMore => data.len(),
            HeadStep::Complete { consumed, head, first } => {
                self.on_response_head(head, first, ts, out);
                consumed
            }
            HeadStep::TooLarge => {
                let first = self.resp_head.first().unwrap_or(ts);
                let cut = self.resp_head.take_cut(head::cut_response).map(|(r, _)| r);
                if cut.is_none() && !self.seen_message {
                    self.broken = true;
                } else if cut.is_none() && self.resp_probing {
                    self.resp_state = RespState::Resync;
                } else {
                    self.response_cut(cut, first, ts, out);
                }
                data.len()
            }
            HeadStep::Invalid => {
                self.resp_head.clear();
                if !self.seen_message {
                    self.broken = true;
                } else if self.resp_probing {
                    self.resp_state = RespState::Resync; // a false start: keep looking
                } else {
                    self.response_unparsable(ts, out);
                }
                data.len()
            }
        }
    }

    /// The request a response starting in syscall `first` answers: the
    /// oldest waiting one, unless that was sent after the response was
    /// already received (then the response answers a request never seen).
    pub(super) fn front_for(&mut self, first: Ts) -> Option<&mut Pending> {
        self.pending.front_mut().filter(|p| p.first.enter_ns <= first.exit_ns)
    }

    fn on_response_head(&mut self, parsed: ParsedResponse, first: Ts, ts: Ts, out: &mut Vec<Http1Event>) {
        self.seen_message = true;
        self.resp_probing = false;
        let status = parsed.head.status;
        let Some(front) = self.front_for(first) else {
            self.skip_orphan(&parsed);
            return;
        };
        front.response_first.get_or_insert(first);
        front.response_last = Some(ts);
        if is_interim(status) {
            return; // the final response follows for the same request
        }
        let seq = front.seq;
        let tunnel = status == 101 || (front.head.method == "CONNECT" && (200..300).contains(&status));
        let body = BodyReader::new(head::response_body(&parsed, front.head.method == "HEAD"));
        let expect_continue = front.head.expect_continue;
        front.response = Some(parsed.head);
        if tunnel {
            // The stream now carries another protocol.
            self.finish_response(seq, None, None, None, out);
            self.broken = true;
            return;
        }
        if expect_continue {
            self.allow_body_skip(seq);
        }
        match body {
            Some(body) => self.resp_state = RespState::Body { seq: Some(seq), body },
            None => self.finish_response(seq, Some(0), None, None, out),
        }
    }

    /// A response nobody was waiting for (its request was lost): skip it by
    /// its own framing so the next response is found.
    fn skip_orphan(&mut self, parsed: &ParsedResponse) {
        if parsed.head.status == 101 {
            self.broken = true;
            return;
        }
        if let Some(body) = BodyReader::new(head::response_body(parsed, false)) {
            if body.until_close() {
                // Probably misframed: waiting for close could swallow every
                // later response, while resync finds the next one.
                self.response_resync();
            } else {
                self.resp_state = RespState::Body { seq: None, body };
            }
        }
    }

    fn allow_body_skip(&mut self, seq: u64) {
        if let ReqState::Body { seq: s, body, abandonable } = &mut self.req_state
            && *s == seq
            && body.size() == 0
        {
            *abandonable = true;
        }
    }

    /// A response head cut by a gap or the size bound (`cut` holds its
    /// complete lines, if the status line survived). Its end is unknown, so
    /// the exchange ends here and the stream resyncs.
    fn response_cut(&mut self, cut: Option<ParsedResponse>, first: Ts, ts: Ts, out: &mut Vec<Http1Event>) {
        let Some(front) = self.front_for(first) else {
            self.response_resync();
            return;
        };
        front.response_first.get_or_insert(first);
        front.response_last = Some(ts);
        let seq = front.seq;
        let mut switching = false;
        match cut {
            // The final response is still to come; resync will find it.
            Some(r) if is_interim(r.head.status) => {}
            Some(r) => {
                switching = r.head.status == 101;
                front.response = Some(r.head);
                front.response_truncated = true;
                self.finish_response(seq, None, None, None, out);
            }
            None => {
                front.response_truncated = true;
                self.finish_response(seq, None, None, None, out);
            }
        }
        if switching {
            self.broken = true;
        } else {
            self.response_resync();
        }
    }

    /// Garbage where a response head should be, after the stream was HTTP:
    /// the waiting request's response is lost.
    fn response_unparsable(&mut self, ts: Ts, out: &mut Vec<Http1Event>) {
        if let Some(front) = self.front_for(ts) {
            front.response_first.get_or_insert(ts);
            front.response_last = Some(ts);
            let seq = front.seq;
            self.finish_response(seq, None, Some(ExchangeError::Desync), None, out);
        }
        self.response_resync();
    }

    pub(super) fn response_gap(&mut self, n: u64, ts: Ts, out: &mut Vec<Http1Event>) {
        match &mut self.resp_state {
            RespState::Resync => {}
            RespState::Head => match self.resp_head.first() {
                Some(first) => {
                    let cut = self.resp_head.take_cut(head::cut_response).map(|(r, _)| r);
                    self.response_cut(cut, first, ts, out);
                }
                // The next response began inside the gap.
                None => self.response_cut(None, ts, ts, out),
            },
            RespState::Body { seq, body } => {
                let seq = *seq;
                match body.gap(n) {
                    Gap::Absorbed => self.touch_response(seq, ts),
                    Gap::Done { spill } => {
                        let size = body.size();
                        self.resp_state = RespState::Head;
                        self.touch_response(seq, ts);
                        if let Some(seq) = seq {
                            self.finish_response(seq, Some(size), None, None, out);
                        }
                        if spill > 0 {
                            self.response_cut(None, ts, ts, out);
                        }
                    }
                    Gap::Lost => {
                        self.touch_response(seq, ts);
                        if let Some(seq) = seq {
                            if let Some(front) = self.pending.front_mut().filter(|p| p.seq == seq) {
                                front.response_truncated = true;
                            }
                            self.finish_response(seq, None, None, None, out);
                        }
                        self.response_resync();
                    }
                }
            }
        }
    }

    fn response_resync(&mut self) {
        self.resp_state = RespState::Resync;
        self.resp_head.clear();
        // Responses dropped while resyncing would shift FIFO pairing for
        // every request still waiting.
        for p in &mut self.pending {
            p.suspect = true;
        }
    }

    fn touch_response(&mut self, seq: Option<u64>, ts: Ts) {
        if let Some(front) = self.pending.front_mut()
            && Some(front.seq) == seq
        {
            front.response_last = Some(ts);
        }
    }
}
