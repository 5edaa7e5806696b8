//! Prepared statements and portals by name, bounded: a client that prepares
//! without ever closing costs at most `cap` entries, the oldest dropped first.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::protocol::sql::SqlSummary;

/// Most named prepared statements remembered per connection.
pub(super) const MAX_STATEMENTS: usize = 256;
/// Most named portals remembered per connection (named portals are rare:
/// cursors over the extended protocol).
pub(super) const MAX_PORTALS: usize = 64;
/// Longer names are not remembered (the server cuts names at 63 bytes, and
/// Bind bodies are read only this far).
const MAX_NAME_LEN: usize = 200;

/// A prepared statement's sanitised SQL.
#[derive(Debug)]
pub(super) struct Statement {
    pub summary: SqlSummary,
    /// A capture gap hid part of the SQL text.
    pub cut: bool,
}

/// What a portal or statement name refers to; `None` when its Parse was
/// not seen (prepared before capture started, or evicted).
pub(super) type StatementRef = Option<Arc<Statement>>;

/// Names to values with drop-oldest eviction. The unnamed entry (`""`),
/// replaced on every use by most drivers, lives apart so it never churns
/// the map.
#[derive(Debug)]
pub(super) struct NameMap {
    cap: usize,
    unnamed: StatementRef,
    named: FxHashMap<Box<[u8]>, (u64, StatementRef)>,
    /// Insertion order with each entry's generation; stale pairs (replaced
    /// or removed names) are skipped on eviction and compacted away.
    order: VecDeque<(Box<[u8]>, u64)>,
    next_gen: u64,
}

impl NameMap {
    pub(super) fn new(cap: usize) -> Self {
        Self { cap, unnamed: None, named: FxHashMap::default(), order: VecDeque::new(), next_gen: 0 }
    }

    pub(super) fn insert(&mut self, name: &[u8], value: StatementRef) {
        if name.is_empty() {
            self.unnamed = value;
            return;
        }
        if name.len() > MAX_NAME_LEN {
            return;
        }
        let generation = self.next_gen;
        self.next_gen += 1;
        self.named.insert(name.into(), (generation, value));
        self.order.push_back((name.into(), generation));
        while self.named.len() > self.cap {
            let Some((old, g)) = self.order.pop_front() else { break };
            if self.named.get(&old).is_some_and(|(cur, _)| *cur == g) {
                self.named.remove(&old);
            }
        }
        if self.order.len() > 2 * self.cap + 16 {
            let named = &self.named;
            self.order.retain(|(k, g)| named.get(k).is_some_and(|(cur, _)| cur == g));
        }
    }

    pub(super) fn get(&self, name: &[u8]) -> StatementRef {
        if name.is_empty() {
            return self.unnamed.clone();
        }
        self.named.get(name).and_then(|(_, v)| v.clone())
    }

    pub(super) fn remove(&mut self, name: &[u8]) {
        if name.is_empty() {
            self.unnamed = None;
        } else {
            self.named.remove(name);
        }
    }

    /// Named entries held (for tests of the bound).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.named.len()
    }

    /// Order entries held, stale ones included (for tests of the bound).
    #[cfg(test)]
    pub(super) fn order_len(&self) -> usize {
        self.order.len()
    }
}
