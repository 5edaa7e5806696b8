//! Recorded conversations: the byte streams of real client/server sessions,
//! saved by a recording proxy, replayed by parser tests, fuzz seeds and the
//! parser-throughput benchmarks.
//!
//! Format: a sequence of records, each `dir: u8` (`b'C'` client to server,
//! `b'S'` server to client), `len: u32` little-endian, then `len` bytes: one
//! `recv()` of the proxy, so record boundaries are real syscall boundaries.

/// One direction's bytes from one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    pub from_client: bool,
    pub data: &'a [u8],
}

/// Why a recording could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordingError {
    #[error("record at byte {0}: direction is not b'C' or b'S'")]
    BadDirection(usize),
    #[error("record at byte {0}: cut short")]
    Truncated(usize),
}

/// Splits a recording into its pieces.
pub fn parse(mut bytes: &[u8]) -> Result<Vec<Piece<'_>>, RecordingError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some((&dir, rest)) = bytes.split_first() {
        let from_client = match dir {
            b'C' => true,
            b'S' => false,
            _ => return Err(RecordingError::BadDirection(at)),
        };
        let (len, rest) = rest.split_first_chunk::<4>().ok_or(RecordingError::Truncated(at))?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(RecordingError::Truncated(at));
        }
        let (data, rest) = rest.split_at(len);
        out.push(Piece { from_client, data });
        at += 5 + len;
        bytes = rest;
    }
    Ok(out)
}

/// Writes pieces in the recording format (for tests and the recorder).
pub fn write(pieces: &[Piece<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        out.push(if p.from_client { b'C' } else { b'S' });
        out.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
        out.extend_from_slice(p.data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let pieces = [Piece { from_client: true, data: b"abc" }, Piece { from_client: false, data: b"" }];
        let bytes = write(&pieces);
        let back = parse(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert!(back[0].from_client && back[0].data == b"abc");
        assert!(!back[1].from_client && back[1].data.is_empty());
        assert_eq!(parse(&bytes[..bytes.len() - 1]), Err(RecordingError::Truncated(8)));
        assert_eq!(parse(b"X\0\0\0\0"), Err(RecordingError::BadDirection(0)));
    }
}
