//! Frame layer for one direction: reassembles frames across syscalls,
//! joins HEADERS/PUSH_PROMISE with their CONTINUATIONs, counts DATA without
//! storing it, and resynchronises after lost bytes.

use super::{MAX_FRAME_SIZE_LIMIT, PREFACE, Ts};

/// Largest header block (HEADERS + CONTINUATION fragments) buffered; the
/// rest of a bigger block is dropped and the block decoded as a prefix.
pub(super) const MAX_BLOCK: usize = 64 * 1024;

/// Control payload bytes kept (SETTINGS beyond 170 entries is abuse).
const MAX_CONTROL: usize = 1024;

use super::header::{
    CONTINUATION, DATA, END_HEADERS, END_STREAM, FrameError, FrameHeader, GOAWAY, HEADERS, PADDED, PRIORITY_FLAG,
    PUSH_PROMISE, RST_STREAM, SETTINGS, check, plausible_frames,
};

/// A completed header block.
#[derive(Debug)]
pub(super) struct HeaderBlock {
    pub stream: u32,
    pub end_stream: bool,
    /// From PUSH_PROMISE: decoded only to keep HPACK state.
    pub push: bool,
    /// The block (fragments without padding or priority fields).
    pub buf: Vec<u8>,
    /// `buf` is only a prefix of the block (size bound or lost bytes).
    pub cut: bool,
    /// Bytes of the block were lost to a capture gap or resync.
    pub gap: bool,
    /// Syscall carrying the first byte of the HEADERS frame.
    pub first: Ts,
    /// Syscall carrying the last byte of the block's last frame.
    pub last: Ts,
}

/// What the frame layer reports, in wire order.
#[derive(Debug)]
pub(super) enum Frame {
    Headers(HeaderBlock),
    Data {
        stream: u32,
        end_stream: bool,
        body: u64,
        first: Ts,
        last: Ts,
    },
    /// `code` is `None` when a gap hid it.
    Reset {
        stream: u32,
        code: Option<u32>,
        ts: Ts,
    },
    GoAway {
        last_stream: u32,
    },
    Settings {
        header_table_size: Option<u32>,
        max_frame_size: Option<u32>,
    },
    /// Bytes of this direction were lost: any frame may be missing, so
    /// HPACK state and open streams' data are unknown.
    Lost,
    /// Protocol violation on a direction read from its start.
    Broken(FrameError),
}

#[derive(Debug)]
struct Payload {
    h: FrameHeader,
    /// Payload bytes consumed so far.
    pos: u32,
    first: Ts,
    /// A gap hid payload bytes.
    gap: bool,
    /// DATA pad length byte, once seen.
    pad: Option<u8>,
    /// Where this frame's bytes start in the block buffer.
    base: usize,
}

#[derive(Debug)]
enum State {
    /// Matching the client preface; the count of bytes matched.
    Preface(usize),
    Header,
    Payload(Payload),
    /// Dropping bytes until a chunk starts with plausible frames.
    Resync,
    /// Broken: everything is ignored.
    Dead,
}

/// Frame reader for one direction.
#[derive(Debug)]
pub(super) struct FrameReader {
    state: State,
    from_client: bool,
    hdr: [u8; 9],
    hdr_len: usize,
    /// Syscall that carried the first byte of `hdr`.
    hdr_ts: Ts,
    /// Header block awaiting CONTINUATION frames.
    block: Option<HeaderBlock>,
    ctrl: Vec<u8>,
    /// Synchronised by guessing (mid-stream join or after lost bytes): a
    /// violation means a wrong guess or lost bytes, not a broken peer.
    lenient: bool,
}

impl FrameReader {
    /// `mid_stream`: start by looking for a frame boundary.
    pub(super) fn new(from_client: bool, mid_stream: bool) -> Self {
        let state = match (mid_stream, from_client) {
            (true, _) => State::Resync,
            (false, true) => State::Preface(0),
            (false, false) => State::Header,
        };
        Self {
            state,
            from_client,
            hdr: [0; 9],
            hdr_len: 0,
            hdr_ts: Ts::default(),
            block: None,
            ctrl: Vec::new(),
            lenient: mid_stream,
        }
    }

    /// Heap bytes held (bounded by `MAX_BLOCK + MAX_CONTROL` plus slack).
    #[cfg(test)]
    pub(super) fn buffered_bytes(&self) -> usize {
        self.block.as_ref().map_or(0, |b| b.buf.capacity()) + self.ctrl.capacity()
    }

    /// Feeds the captured bytes of one chunk. `max_frame` is the receiver's
    /// SETTINGS_MAX_FRAME_SIZE, `None` when unknown (mid-stream join).
    pub(super) fn feed(&mut self, data: &[u8], ts: Ts, max_frame: Option<u32>, out: &mut Vec<Frame>) {
        let mut data = data;
        if matches!(self.state, State::Resync) {
            if self.from_client && data.starts_with(PREFACE) {
                data = &data[PREFACE.len()..];
                self.state = State::Header;
            } else if plausible_frames(data, max_frame.unwrap_or(super::DEFAULT_MAX_FRAME_SIZE)) {
                self.state = State::Header;
            } else {
                return;
            }
        }
        while !data.is_empty() {
            let used = self.step(data, ts, max_frame, out);
            if used == 0 {
                break; // Resync/Dead: the rest of the chunk is dropped
            }
            data = data.get(used..).unwrap_or_default();
        }
    }

    /// `n` bytes after the last feed were not captured.
    pub(super) fn gap(&mut self, n: u64, ts: Ts, out: &mut Vec<Frame>) {
        if n == 0 {
            return;
        }
        match &mut self.state {
            State::Resync | State::Dead => {}
            State::Preface(_) | State::Header => self.lose(out),
            State::Payload(p) => {
                let left = u64::from(p.h.len - p.pos);
                p.gap = true;
                if let Some(b) = &mut self.block {
                    b.cut = true;
                    b.gap = true;
                }
                if n < left {
                    p.pos += n as u32; // n < left <= u32::MAX
                } else {
                    p.pos = p.h.len;
                    self.finish_payload(ts, out);
                    if n > left {
                        self.lose(out);
                    }
                }
            }
        }
    }

    /// Consumes some of `data`; 0 means the rest of the chunk is dropped.
    fn step(&mut self, data: &[u8], ts: Ts, max_frame: Option<u32>, out: &mut Vec<Frame>) -> usize {
        match &mut self.state {
            State::Resync | State::Dead => 0,
            State::Preface(matched) => {
                let want = &PREFACE[*matched..];
                let n = want.len().min(data.len());
                if data[..n] != want[..n] {
                    self.fail(FrameError::Preface, out);
                    return 0;
                }
                *matched += n;
                if *matched == PREFACE.len() {
                    self.state = State::Header;
                }
                n
            }
            State::Header => {
                if self.hdr_len == 0 {
                    self.hdr_ts = ts;
                }
                let n = (9 - self.hdr_len).min(data.len());
                self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&data[..n]);
                self.hdr_len += n;
                if self.hdr_len == 9 {
                    self.hdr_len = 0;
                    self.start_frame(FrameHeader::parse(&self.hdr), self.hdr_ts, ts, max_frame, out);
                }
                n
            }
            State::Payload(p) => {
                let n = ((p.h.len - p.pos) as usize).min(data.len());
                let bytes = &data[..n];
                if p.pos == 0 && p.h.ty == DATA && p.h.has(PADDED) {
                    p.pad = bytes.first().copied();
                }
                match p.h.ty {
                    HEADERS | PUSH_PROMISE | CONTINUATION => {
                        if let Some(b) = self.block.as_mut().filter(|b| !b.cut) {
                            let take = n.min(MAX_BLOCK.saturating_sub(b.buf.len()));
                            // Grow by hand so capacity never passes MAX_BLOCK.
                            let want = (b.buf.len() + take).max(b.buf.capacity() * 2).min(MAX_BLOCK);
                            if want > b.buf.capacity() {
                                b.buf.reserve_exact(want - b.buf.len());
                            }
                            b.buf.extend_from_slice(&bytes[..take]);
                            b.cut = n > take;
                        }
                    }
                    SETTINGS | RST_STREAM | GOAWAY => {
                        let room = MAX_CONTROL.saturating_sub(self.ctrl.len());
                        self.ctrl.extend_from_slice(&bytes[..n.min(room)]);
                    }
                    _ => {}
                }
                p.pos += n as u32; // n <= len - pos
                if p.pos == p.h.len {
                    self.finish_payload(ts, out);
                }
                n
            }
        }
    }

    /// A frame header is complete: `first` is the syscall that carried its
    /// first byte, `ts` the current one.
    fn start_frame(&mut self, h: FrameHeader, first: Ts, ts: Ts, max_frame: Option<u32>, out: &mut Vec<Frame>) {
        if h.len > max_frame.unwrap_or(MAX_FRAME_SIZE_LIMIT) {
            return self.fail(FrameError::TooLarge(h.len), out);
        }
        if let Err(e) = check(&h, self.from_client) {
            return self.fail(e, out);
        }
        match (&self.block, h.ty) {
            (Some(b), CONTINUATION) if b.stream == h.stream => {}
            (Some(_), _) => return self.fail(FrameError::Continuation, out),
            (None, CONTINUATION) if self.lenient => {
                // The HEADERS it continues predates the join or was lost:
                // its HPACK updates are unknown; skip the fragment.
                out.push(Frame::Lost);
            }
            (None, CONTINUATION) => return self.fail(FrameError::Continuation, out),
            (None, HEADERS | PUSH_PROMISE) => {
                self.block = Some(HeaderBlock {
                    stream: h.stream,
                    end_stream: h.ty == HEADERS && h.has(END_STREAM),
                    push: h.ty == PUSH_PROMISE,
                    buf: Vec::new(),
                    cut: false,
                    gap: false,
                    first,
                    last: ts,
                });
            }
            (None, _) => {}
        }
        let base = self.block.as_ref().map_or(0, |b| b.buf.len());
        self.ctrl.clear();
        self.state = State::Payload(Payload { h, pos: 0, first, gap: false, pad: None, base });
        if h.len == 0 {
            self.finish_payload(ts, out);
        }
    }

    /// The current frame's payload is all consumed (or lost to a gap).
    fn finish_payload(&mut self, ts: Ts, out: &mut Vec<Frame>) {
        let State::Payload(p) = std::mem::replace(&mut self.state, State::Header) else {
            return;
        };
        let h = p.h;
        let padded = u32::from(h.has(PADDED) && matches!(h.ty, DATA | HEADERS | PUSH_PROMISE));
        match h.ty {
            DATA => {
                let pad = p.pad.map_or(0, u32::from);
                let Some(body) = h.len.checked_sub(padded + pad) else {
                    return self.fail(FrameError::Malformed(h.ty), out);
                };
                let end_stream = h.has(END_STREAM);
                out.push(Frame::Data { stream: h.stream, end_stream, body: u64::from(body), first: p.first, last: ts });
            }
            HEADERS | PUSH_PROMISE | CONTINUATION => self.finish_fragment(&p, padded, ts, out),
            RST_STREAM => {
                let code = (!p.gap).then(|| be32(&self.ctrl, 0)).flatten();
                out.push(Frame::Reset { stream: h.stream, code, ts });
            }
            GOAWAY if !p.gap => {
                if let Some(last) = be32(&self.ctrl, 0) {
                    out.push(Frame::GoAway { last_stream: last & 0x7fff_ffff });
                }
            }
            SETTINGS if !p.gap && !h.has(END_STREAM) => self.finish_settings(out),
            // PRIORITY, PING, WINDOW_UPDATE, unknown types: nothing to report.
            _ => {}
        }
    }

    fn finish_fragment(&mut self, p: &Payload, padded: u32, ts: Ts, out: &mut Vec<Frame>) {
        let h = p.h;
        let Some(b) = self.block.as_mut() else {
            return; // an orphan CONTINUATION skipped in lenient mode
        };
        // This frame's stored payload is buf[base..]; its fragment is
        // payload[fixed..len - pad], of which only a prefix may be stored.
        let base = p.base.min(b.buf.len());
        let stored = b.buf.len() - base;
        let fixed = padded
            + match h.ty {
                HEADERS if h.has(PRIORITY_FLAG) => 5,
                PUSH_PROMISE => 4,
                _ => 0,
            };
        let pad = if padded == 1 { b.buf.get(base).map(|&x| u32::from(x)) } else { Some(0) };
        let end = match pad {
            Some(pad) => match h.len.checked_sub(pad).filter(|&e| e >= fixed) {
                Some(end) => (end as usize).min(stored),
                None => return self.fail(FrameError::Malformed(h.ty), out),
            },
            None => {
                // The pad length byte was not stored: nothing of this frame
                // was, and the block is already marked cut.
                b.cut = true;
                0
            }
        };
        let start = (fixed as usize).min(end);
        b.buf.truncate(base + end);
        b.buf.drain(base..base + start);
        b.last = ts;
        if h.has(END_HEADERS)
            && let Some(b) = self.block.take()
        {
            out.push(Frame::Headers(b));
        }
    }

    fn finish_settings(&mut self, out: &mut Vec<Frame>) {
        let (mut header_table_size, mut max_frame_size) = (None, None);
        for e in self.ctrl.chunks_exact(6) {
            let value = u32::from_be_bytes([e[2], e[3], e[4], e[5]]);
            match u16::from_be_bytes([e[0], e[1]]) {
                0x1 => header_table_size = Some(value),
                0x5 if (super::DEFAULT_MAX_FRAME_SIZE..=MAX_FRAME_SIZE_LIMIT).contains(&value) => {
                    max_frame_size = Some(value);
                }
                0x5 => return self.fail(FrameError::Malformed(SETTINGS), out),
                _ => {}
            }
        }
        out.push(Frame::Settings { header_table_size, max_frame_size });
    }

    /// A violation: fatal when the direction was read from its start, lost
    /// bytes (a wrong resync guess) otherwise.
    fn fail(&mut self, e: FrameError, out: &mut Vec<Frame>) {
        if self.lenient {
            self.lose(out);
        } else {
            self.block = None;
            self.state = State::Dead;
            out.push(Frame::Broken(e));
        }
    }

    /// Bytes are lost: report the block in progress as cut, drop the rest
    /// of the chunk and look for a frame boundary in later chunks.
    fn lose(&mut self, out: &mut Vec<Frame>) {
        if let Some(mut b) = self.block.take() {
            b.cut = true;
            b.gap = true;
            out.push(Frame::Headers(b));
        }
        self.ctrl = Vec::new();
        self.hdr_len = 0;
        self.lenient = true;
        self.state = State::Resync;
        out.push(Frame::Lost);
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}
