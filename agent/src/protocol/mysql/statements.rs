//! Prepared statements of one connection, by server-assigned id, so that
//! `COM_STMT_EXECUTE` can be reported with the statement's SQL.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::commands::Statement;

/// Statements remembered per connection; older ones are forgotten first.
pub(super) const MAX_STATEMENTS: usize = 256;

#[derive(Debug, Default)]
pub(super) struct Statements {
    map: FxHashMap<u32, Statement>,
    /// Insertion order for eviction: the same ids as `map`.
    order: VecDeque<u32>,
}

impl Statements {
    pub(super) fn insert(&mut self, id: u32, statement: Statement) {
        if self.map.insert(id, statement).is_some() {
            return;
        }
        self.order.push_back(id);
        while self.map.len() > MAX_STATEMENTS {
            let Some(old) = self.order.pop_front() else { break };
            self.map.remove(&old);
        }
    }

    pub(super) fn get(&self, id: u32) -> Option<&Statement> {
        self.map.get(&id)
    }

    pub(super) fn remove(&mut self, id: u32) {
        if self.map.remove(&id).is_some() {
            // At most MAX_STATEMENTS entries, and closes are rare next to executes.
            self.order.retain(|&x| x != id);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}
