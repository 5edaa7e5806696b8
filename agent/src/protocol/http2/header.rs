//! Frame headers (RFC 9113 §4.1): parsing, the per-type rules a receiver
//! enforces, and the stricter plausibility test used to find frame
//! boundaries in bytes of unknown alignment.

pub(super) const DATA: u8 = 0;
pub(super) const HEADERS: u8 = 1;
pub(super) const PRIORITY: u8 = 2;
pub(super) const RST_STREAM: u8 = 3;
pub(super) const SETTINGS: u8 = 4;
pub(super) const PUSH_PROMISE: u8 = 5;
pub(super) const PING: u8 = 6;
pub(super) const GOAWAY: u8 = 7;
pub(super) const WINDOW_UPDATE: u8 = 8;
pub(super) const CONTINUATION: u8 = 9;

pub(super) const END_STREAM: u8 = 0x1;
pub(super) const END_HEADERS: u8 = 0x4;
pub(super) const PADDED: u8 = 0x8;
pub(super) const PRIORITY_FLAG: u8 = 0x20;

/// A 9-byte frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameHeader {
    pub len: u32,
    pub ty: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub(super) fn parse(b: &[u8; 9]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            ty: b[3],
            flags: b[4],
            // The reserved bit must be ignored on receipt.
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Why a direction's framing is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The client did not open with the connection preface.
    #[error("missing HTTP/2 connection preface")]
    Preface,
    /// A frame longer than the receiver's SETTINGS_MAX_FRAME_SIZE.
    #[error("frame of {0} bytes exceeds the maximum frame size")]
    TooLarge(u32),
    /// A header block interrupted by another frame, or a CONTINUATION
    /// without a header block to continue.
    #[error("CONTINUATION sequence violated")]
    Continuation,
    /// Stream id, length, flags or padding not allowed for the frame type.
    #[error("malformed frame of type {0}")]
    Malformed(u8),
}

/// Checks a header against RFC 9113's per-type rules (the ones a receiver
/// treats as connection errors). Unknown types pass: they must be ignored.
pub(super) fn check(h: &FrameHeader, from_client: bool) -> Result<(), FrameError> {
    let on_stream = h.stream != 0;
    let ok = match h.ty {
        DATA | HEADERS | CONTINUATION => on_stream,
        PRIORITY => on_stream && h.len == 5,
        RST_STREAM => on_stream && h.len == 4,
        SETTINGS => !on_stream && h.len.is_multiple_of(6) && !(h.has(END_STREAM) && h.len != 0),
        PUSH_PROMISE => on_stream && !from_client,
        PING => !on_stream && h.len == 8,
        GOAWAY => !on_stream && h.len >= 8,
        WINDOW_UPDATE => h.len == 4,
        _ => true,
    };
    if ok { Ok(()) } else { Err(FrameError::Malformed(h.ty)) }
}

/// Flags a sender may set, per type (undefined flags MUST be sent unset).
fn allowed_flags(ty: u8) -> u8 {
    match ty {
        DATA => END_STREAM | PADDED,
        HEADERS => END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG,
        SETTINGS | PING => 0x1,
        PUSH_PROMISE => END_HEADERS | PADDED,
        CONTINUATION => END_HEADERS,
        _ => 0,
    }
}

/// Stricter than `check`, for guessing where frames start in unknown bytes:
/// known type, defined flags only, reserved bit clear, stream frames on odd
/// (client-initiated) streams.
fn plausible(raw: &[u8; 9], max_len: u32) -> bool {
    let h = FrameHeader::parse(raw);
    let stream_frame = matches!(h.ty, DATA | HEADERS | PRIORITY | RST_STREAM | PUSH_PROMISE | CONTINUATION);
    h.ty <= CONTINUATION
        && h.len <= max_len
        && raw[5] & 0x80 == 0
        && h.flags & !allowed_flags(h.ty) == 0
        && (!stream_frame || h.stream % 2 == 1)
        && check(&h, h.ty != PUSH_PROMISE).is_ok()
}

/// `data` starts with a plausible frame header, and so does every later
/// frame whose header lies wholly inside `data`.
pub(super) fn plausible_frames(data: &[u8], max_len: u32) -> bool {
    let mut at = 0usize;
    let mut frames = 0;
    while let Some(raw) = data.get(at..at + 9).and_then(|s| <&[u8; 9]>::try_from(s).ok()) {
        if !plausible(raw, max_len) {
            return false;
        }
        frames += 1;
        at += 9 + FrameHeader::parse(raw).len as usize;
    }
    frames > 0
}
