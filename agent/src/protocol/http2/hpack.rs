//! HPACK decoding (RFC 7541) that tolerates missing history.
//!
//! A capture may start mid-connection or lose bytes, so the decoder may not
//! know the dynamic table. It keeps only what it can prove: entries it saw
//! inserted are known *relative to the newest end* of the table (indices
//! count from the newest entry, and eviction only removes from the oldest
//! end, so the k-th newest insertion seen is index 62 + k - 1 whatever came
//! before). An index beyond the entries seen is unknown when older unseen
//! entries may exist, and an error otherwise. No crate offers this: they
//! all abort a block on the first bad index, which would lose every later
//! field and leave the table missing that block's insertions.

use std::collections::VecDeque;

use super::huffman::{self, HuffmanError};

/// Dynamic table size assumed until a size update says otherwise.
pub(super) const DEFAULT_TABLE_SIZE: u32 = 4096;

/// Most table bytes (RFC 7541 §4.1 accounting) kept per decoder. A peer may
/// allow a bigger table; the oldest entries beyond this become unknown.
pub(super) const MAX_TRACKED_TABLE: usize = 64 * 1024;

/// Per-entry overhead in the table size accounting (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// RFC 7541 Appendix A.
#[rustfmt::skip]
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""), (b":method", b"GET"), (b":method", b"POST"), (b":path", b"/"),
    (b":path", b"/index.html"), (b":scheme", b"http"), (b":scheme", b"https"), (b":status", b"200"),
    (b":status", b"204"), (b":status", b"206"), (b":status", b"304"), (b":status", b"400"),
    (b":status", b"404"), (b":status", b"500"), (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"), (b"accept-language", b""), (b"accept-ranges", b""),
    (b"accept", b""), (b"access-control-allow-origin", b""), (b"age", b""), (b"allow", b""),
    (b"authorization", b""), (b"cache-control", b""), (b"content-disposition", b""),
    (b"content-encoding", b""), (b"content-language", b""), (b"content-length", b""),
    (b"content-location", b""), (b"content-range", b""), (b"content-type", b""), (b"cookie", b""),
    (b"date", b""), (b"etag", b""), (b"expect", b""), (b"expires", b""), (b"from", b""),
    (b"host", b""), (b"if-match", b""), (b"if-modified-since", b""), (b"if-none-match", b""),
    (b"if-range", b""), (b"if-unmodified-since", b""), (b"last-modified", b""), (b"link", b""),
    (b"location", b""), (b"max-forwards", b""), (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""), (b"range", b""), (b"referer", b""), (b"refresh", b""),
    (b"retry-after", b""), (b"server", b""), (b"set-cookie", b""),
    (b"strict-transport-security", b""), (b"transfer-encoding", b""), (b"user-agent", b""),
    (b"vary", b""), (b"via", b""), (b"www-authenticate", b""),
];

/// Why a header block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// An integer does not fit 32 bits (or uses too many octets).
    #[error("HPACK integer overflow")]
    IntegerOverflow,
    /// The block ends inside a representation.
    #[error("HPACK block truncated")]
    Truncated,
    /// Index 0, or beyond every table entry that can exist.
    #[error("invalid HPACK index {0}")]
    InvalidIndex(u32),
    /// Bad Huffman string.
    #[error(transparent)]
    Huffman(#[from] HuffmanError),
    /// A dynamic table size update above what SETTINGS allows.
    #[error("HPACK table size update to {0} exceeds the allowed size")]
    TableSizeTooLarge(u32),
    /// A dynamic table size update after a header field.
    #[error("HPACK table size update after a header field")]
    SizeUpdateMisplaced,
}

/// One decoded header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field<'a> {
    /// Name and value are known.
    Known { name: &'a [u8], value: &'a [u8] },
    /// The field referenced dynamic-table state never seen.
    Unknown,
}

/// A table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// A borrowed name and value.
type Pair<'a> = (&'a [u8], &'a [u8]);

/// The decoder's copy of one direction's dynamic table.
#[derive(Debug)]
struct Table {
    /// Entries seen inserted, newest first.
    known: VecDeque<Entry>,
    /// Size of `known` under RFC 7541 §4.1 accounting.
    known_size: usize,
    /// The table's maximum size as last set by a size update (or the
    /// default). Meaningful only when `max_exact`.
    max_size: usize,
    /// The maximum is known (fresh connection, or a size update was seen
    /// since the state was lost).
    max_exact: bool,
    /// Entries older than `known` may exist in the peer's table.
    tail_unknown: bool,
}

impl Table {
    /// How many bytes of entries to keep: when the real maximum is unknown,
    /// keeping more than it is harmless (a valid encoder never references
    /// an evicted entry), so only the memory bound applies.
    fn keep_limit(&self) -> usize {
        if self.max_exact { self.max_size.min(MAX_TRACKED_TABLE) } else { MAX_TRACKED_TABLE }
    }

    /// Evicts oldest known entries until the table fits its limit.
    fn evict(&mut self) {
        let limit = self.keep_limit();
        // Evicting under the exact maximum mirrors the peer, which evicts
        // every older (unknown) entry first; evicting under the memory
        // bound drops an entry the peer may still hold.
        let mirrors_peer = self.max_exact && self.max_size <= MAX_TRACKED_TABLE;
        while self.known_size > limit {
            let Some((n, v)) = self.known.pop_back() else {
                break;
            };
            self.known_size -= n.len() + v.len() + ENTRY_OVERHEAD;
            self.tail_unknown = !mirrors_peer;
        }
        self.settle();
    }

    /// With an exact maximum, a table whose known part leaves no room for
    /// even an empty entry holds no unknown older entries.
    fn settle(&mut self) {
        if self.max_exact && self.max_size <= MAX_TRACKED_TABLE && self.known_size + ENTRY_OVERHEAD > self.max_size {
            self.tail_unknown = false;
        }
    }

    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.keep_limit() {
            // The peer's table empties (RFC 7541 §4.4) if the maximum is
            // exact; otherwise all that is known is that positions moved.
            self.known.clear();
            self.known_size = 0;
            self.tail_unknown = !self.max_exact || self.max_size > MAX_TRACKED_TABLE;
            return;
        }
        self.known.push_front((name.into(), value.into()));
        self.known_size += size;
        self.evict();
    }

    /// An entry of unknown content (and so unknown size) was inserted:
    /// nothing older can be located any more.
    fn insert_unknown(&mut self) {
        self.forget();
    }

    fn forget(&mut self) {
        self.known.clear();
        self.known_size = 0;
        self.tail_unknown = true;
    }

    fn resize(&mut self, max: usize) {
        self.max_size = max;
        self.max_exact = true;
        self.evict();
    }

    /// Dynamic index `k` (1 = newest) of HPACK index `index`; `None` when
    /// the entry exists but was never seen.
    fn get(&self, k: usize, index: u32) -> Result<Option<Pair<'_>>, HpackError> {
        match self.known.get(k.wrapping_sub(1)) {
            Some((n, v)) if k > 0 => Ok(Some((n, v))),
            _ if self.tail_unknown => Ok(None),
            _ => Err(HpackError::InvalidIndex(index)),
        }
    }
}

/// HPACK decoder for one direction of one connection.
#[derive(Debug)]
pub(super) struct Decoder {
    table: Table,
    /// Largest size update allowed (SETTINGS_HEADER_TABLE_SIZE of the
    /// receiver, or unbounded when kspan never saw its SETTINGS).
    allowed: u32,
}

impl Decoder {
    /// `mid_stream`: the table's history and maximum are unknown.
    pub(super) fn new(mid_stream: bool) -> Self {
        Self {
            table: Table {
                known: VecDeque::new(),
                known_size: 0,
                max_size: DEFAULT_TABLE_SIZE as usize,
                max_exact: !mid_stream,
                tail_unknown: mid_stream,
            },
            allowed: if mid_stream { u32::MAX } else { DEFAULT_TABLE_SIZE },
        }
    }

    /// The receiver announced SETTINGS_HEADER_TABLE_SIZE `size`. Until it
    /// is acknowledged the old bound still applies, so the bound only grows.
    pub(super) fn allow_table_size(&mut self, size: u32) {
        self.allowed = self.allowed.max(size);
    }

    /// Header blocks were lost: table positions and maximum are unknown.
    pub(super) fn poison(&mut self) {
        self.table.forget();
        self.table.max_exact = false;
        self.allowed = u32::MAX;
    }

    /// Table bytes held (bounded by `MAX_TRACKED_TABLE`).
    #[cfg(test)]
    pub(super) fn table_bytes(&self) -> usize {
        self.table.known_size
    }

    /// Decodes one header block, calling `f` for each field in order. With
    /// `cut`, `block` is only a prefix of the real block: decoding stops
    /// silently where it ends. On error, fields already passed to `f` are
    /// real but the table may miss the rest of the block's updates.
    pub(super) fn decode(&mut self, block: &[u8], cut: bool, mut f: impl FnMut(Field<'_>)) -> Result<(), HpackError> {
        let mut pos = 0;
        let mut seen_field = false;
        let mut name = Vec::new();
        let mut value = Vec::new();
        while pos < block.len() {
            match self.decode_one(block, &mut pos, &mut seen_field, &mut name, &mut value, &mut f) {
                Err(HpackError::Truncated) if cut => return Ok(()),
                r => r?,
            }
        }
        Ok(())
    }

    fn decode_one(
        &mut self,
        block: &[u8],
        pos: &mut usize,
        seen_field: &mut bool,
        name: &mut Vec<u8>,
        value: &mut Vec<u8>,
        f: &mut impl FnMut(Field<'_>),
    ) -> Result<(), HpackError> {
        let first = block.get(*pos).copied().ok_or(HpackError::Truncated)?;
        if first & 0xe0 == 0x20 {
            // Dynamic table size update (§6.3): only before the first field.
            let size = read_int(block, pos, 5)?;
            if *seen_field {
                return Err(HpackError::SizeUpdateMisplaced);
            }
            if size > self.allowed {
                return Err(HpackError::TableSizeTooLarge(size));
            }
            self.table.resize(size as usize);
            return Ok(());
        }
        *seen_field = true;
        if first & 0x80 != 0 {
            // Indexed field (§6.1).
            let index = read_int(block, pos, 7)?;
            match self.lookup(index)? {
                Some((n, v)) => f(Field::Known { name: n, value: v }),
                None => f(Field::Unknown),
            }
            return Ok(());
        }
        // Literal (§6.2): with incremental indexing (01), without (0000) or
        // never indexed (0001).
        let (prefix, indexing) = if first & 0x40 != 0 { (6, true) } else { (4, false) };
        let name_index = read_int(block, pos, prefix)?;
        name.clear();
        let name_known = if name_index == 0 {
            read_string(block, pos, name)?;
            true
        } else {
            match self.lookup(name_index)? {
                Some((n, _)) => {
                    name.extend_from_slice(n);
                    true
                }
                None => false,
            }
        };
        value.clear();
        read_string(block, pos, value)?;
        if name_known {
            f(Field::Known { name: name.as_slice(), value: value.as_slice() });
            if indexing {
                self.table.insert(name, value);
            }
        } else {
            f(Field::Unknown);
            if indexing {
                self.table.insert_unknown();
            }
        }
        Ok(())
    }

    /// Entry at a 1-based HPACK index; `None` when it is unknown.
    fn lookup(&self, index: u32) -> Result<Option<Pair<'_>>, HpackError> {
        let i = index as usize;
        if i == 0 {
            return Err(HpackError::InvalidIndex(index));
        }
        if let Some(&(n, v)) = STATIC_TABLE.get(i - 1) {
            return Ok(Some((n, v)));
        }
        self.table.get(i - STATIC_TABLE.len(), index)
    }
}

/// Reads an integer with an `n`-bit prefix (§5.1) at `*pos`, advancing it.
/// Values above `u32::MAX` are rejected: no legitimate index, length or
/// size comes near, and bounding the continuation bytes defeats integer
/// bombs.
pub(super) fn read_int(buf: &[u8], pos: &mut usize, n: u8) -> Result<u32, HpackError> {
    let mask = (1u16 << n) as u8 - 1;
    let first = buf.get(*pos).copied().ok_or(HpackError::Truncated)?;
    *pos += 1;
    let mut value = u64::from(first & mask);
    if value < u64::from(mask) {
        return Ok(value as u32);
    }
    let mut shift = 0u32;
    loop {
        let b = buf.get(*pos).copied().ok_or(HpackError::Truncated)?;
        *pos += 1;
        value += u64::from(b & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(HpackError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok(value as u32);
        }
        shift += 7;
        if shift > 28 {
            // Redundant zero continuations could otherwise go on forever.
            return Err(HpackError::IntegerOverflow);
        }
    }
}

/// Reads a string literal (§5.2) at `*pos` into `out`, advancing `pos`.
fn read_string(buf: &[u8], pos: &mut usize, out: &mut Vec<u8>) -> Result<(), HpackError> {
    let huffman = buf.get(*pos).is_some_and(|b| b & 0x80 != 0);
    let len = read_int(buf, pos, 7)? as usize;
    let end = pos.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = buf.get(*pos..end).ok_or(HpackError::Truncated)?;
    *pos = end;
    if huffman {
        huffman::decode(raw, out)?;
    } else {
        out.extend_from_slice(raw);
    }
    Ok(())
}
