//! Packet framing for one direction: `len: u24 LE`, `seq: u8`, payload.
//! A payload of exactly [`MAX_PART`] bytes continues in the next packet, so
//! a logical message is a run of such parts ended by a shorter one.
//!
//! Only a message's head (its first bytes, up to a cap) is kept: the rest is
//! counted down, which lets the framer cross capture gaps that fall inside a
//! message without losing its place. Heads are borrowed from the chunk when
//! a message lies inside it, copied (bounded) only when it spans chunks.

use crate::protocol::http1::{Chunk, Ts};

/// A part this long is followed by another part of the same message.
pub(super) const MAX_PART: u32 = 0x00ff_ffff;

/// Buffers grown past this are released after use rather than kept for the
/// connection's lifetime.
const KEEP_CAPACITY: usize = 4096;

/// One logical message, delivered once its last byte has gone by.
#[derive(Debug, Clone, Copy)]
pub(super) struct Message<'a> {
    /// Sequence id of the first part.
    pub seq: u8,
    /// Sequence id of the last part (the reply to a command continues from it).
    pub last_seq: u8,
    /// Payload length over all parts, as the headers declared it.
    pub len: u64,
    /// The payload's first `min(len, cap)` bytes, fewer if a gap hid some.
    pub head: &'a [u8],
    /// Syscall carrying the first header byte.
    pub first: Ts,
    /// Syscall carrying the last byte (or the gap that hid it).
    pub last: Ts,
    /// Part of the payload was not captured.
    pub truncated: bool,
}

/// Splits one direction's byte stream into messages.
#[derive(Debug)]
pub(super) struct Framer {
    cap: usize,
    /// Overwrite buffered bytes before reuse: the client's buffer may have
    /// held authentication data.
    wipe: bool,
    lost: bool,
    hdr: [u8; 4],
    hdr_len: usize,
    in_payload: bool,
    part_left: u32,
    more_parts: bool,
    msg_active: bool,
    parts: u32,
    seq: u8,
    last_seq: u8,
    len: u64,
    first: Ts,
    truncated: bool,
    /// Head bytes wanted from the first part.
    head_want: usize,
    /// Where the head starts in the current chunk, while it is borrowed.
    head_at: Option<usize>,
    buf: Vec<u8>,
}

impl Framer {
    /// A framer keeping `cap` head bytes per message; `synced` says whether
    /// the stream starts on a packet boundary.
    pub(super) fn new(cap: usize, wipe: bool, synced: bool) -> Self {
        Framer {
            cap: cap.min(MAX_PART as usize),
            wipe,
            lost: !synced,
            hdr: [0; 4],
            hdr_len: 0,
            in_payload: false,
            part_left: 0,
            more_parts: false,
            msg_active: false,
            parts: 0,
            seq: 0,
            last_seq: 0,
            len: 0,
            first: Ts::default(),
            truncated: false,
            head_want: 0,
            head_at: None,
            buf: Vec::new(),
        }
    }

    /// The framer does not know where packets start.
    pub(super) fn is_lost(&self) -> bool {
        self.lost
    }

    /// Gives up the current position: bytes are ignored until [`Self::resync`].
    pub(super) fn lose(&mut self) {
        self.reset_message();
        self.lost = true;
    }

    /// Declares that the next chunk starts on a packet boundary.
    pub(super) fn resync(&mut self) {
        self.reset_message();
        self.lost = false;
    }

    fn reset_message(&mut self) {
        self.hdr_len = 0;
        self.in_payload = false;
        self.part_left = 0;
        self.more_parts = false;
        self.msg_active = false;
        self.parts = 0;
        self.len = 0;
        self.truncated = false;
        self.head_want = 0;
        self.head_at = None;
        if self.wipe {
            self.buf.fill(0);
        }
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    /// Feeds one chunk; `deliver` gets every message that ends in it.
    pub(super) fn push(&mut self, chunk: &Chunk, mut deliver: impl FnMut(Message<'_>)) {
        if self.lost {
            return;
        }
        let ts = Ts { enter_ns: chunk.enter_ns, exit_ns: chunk.exit_ns };
        let data = chunk.data;
        let mut pos = 0;
        while pos < data.len() && !self.lost {
            let rest = data.get(pos..).unwrap_or_default();
            if self.in_payload {
                let n = rest.len().min(self.part_left as usize);
                if self.parts == 1 && self.head_at.is_none() && !self.truncated && self.buf.len() < self.head_want {
                    let take = n.min(self.head_want - self.buf.len());
                    self.keep(rest.get(..take).unwrap_or_default());
                }
                pos += n;
                self.part_left -= n as u32;
                if self.part_left == 0 {
                    self.end_part(data, ts, &mut deliver);
                }
                continue;
            }
            if !self.msg_active {
                self.msg_active = true;
                self.first = ts;
            }
            let take = rest.len().min(4 - self.hdr_len);
            if let (Some(dst), Some(src)) = (self.hdr.get_mut(self.hdr_len..self.hdr_len + take), rest.get(..take)) {
                dst.copy_from_slice(src);
            }
            self.hdr_len += take;
            pos += take;
            if self.hdr_len < 4 {
                break;
            }
            self.hdr_len = 0;
            let [a, b, c, seq] = self.hdr;
            let part = u32::from_le_bytes([a, b, c, 0]);
            if self.parts == 0 {
                self.seq = seq;
                self.head_want = (part as usize).min(self.cap);
                // Borrowed while the chunk lasts; copied at its end if the
                // message goes on past it.
                self.head_at = Some(pos);
            }
            self.parts = self.parts.saturating_add(1);
            self.last_seq = seq;
            self.len = self.len.saturating_add(u64::from(part));
            self.more_parts = part == MAX_PART;
            self.part_left = part;
            self.in_payload = true;
            if part == 0 {
                self.end_part(data, ts, &mut deliver);
            }
        }
        let gap = chunk.size.saturating_sub(data.len() as u64);
        if gap > 0 && !self.lost {
            self.skip_gap(gap, data, ts, &mut deliver);
        }
        if let Some(at) = self.head_at.take()
            && self.msg_active
        {
            let end = data.len().min(at.saturating_add(self.head_want));
            self.keep(data.get(at..end).unwrap_or_default());
        }
    }

    /// Appends head bytes, growing the buffer no further than the head.
    fn keep(&mut self, bytes: &[u8]) {
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let grow = need.max(self.buf.capacity() * 2).min(self.head_want.max(need));
            self.buf.reserve_exact(grow - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    fn skip_gap(&mut self, gap: u64, data: &[u8], ts: Ts, deliver: &mut impl FnMut(Message<'_>)) {
        if self.in_payload && gap <= u64::from(self.part_left) {
            self.part_left -= gap as u32;
            self.truncated = true;
            if self.part_left == 0 {
                self.end_part(data, ts, deliver);
            }
            return;
        }
        // The gap runs past the end of the current part (or hides a header):
        // where the next packet starts is unknown. A message whose last part
        // ended inside the gap is still reported, flagged.
        if self.msg_active && (self.parts > 0 || self.hdr_len > 0) {
            self.truncated = true;
            if self.parts > 0 {
                self.deliver(data, ts, deliver);
            }
        }
        self.lose();
    }

    fn end_part(&mut self, data: &[u8], ts: Ts, deliver: &mut impl FnMut(Message<'_>)) {
        self.in_payload = false;
        if !self.more_parts {
            self.deliver(data, ts, deliver);
        }
    }

    fn deliver(&mut self, data: &[u8], ts: Ts, deliver: &mut impl FnMut(Message<'_>)) {
        let head = match self.head_at {
            Some(at) => data.get(at..data.len().min(at.saturating_add(self.head_want))).unwrap_or_default(),
            None => &self.buf[..],
        };
        deliver(Message {
            seq: self.seq,
            last_seq: self.last_seq,
            len: self.len,
            head,
            first: self.first,
            last: ts,
            truncated: self.truncated,
        });
        self.reset_message();
    }
}

#[cfg(test)]
impl Framer {
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}
