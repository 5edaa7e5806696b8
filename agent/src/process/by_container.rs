//! What kspan learnt about each container, by container id: the pod or
//! Docker config a container's processes are named by is read once for all
//! of them, in a table as bounded as the process registry.

use std::{
    collections::HashMap,
    io,
    sync::Arc,
    time::{Duration, Instant},
};

pub struct ByContainer<T> {
    /// `Err`: not found, at that instant.
    known: HashMap<String, Result<Arc<T>, Instant>>,
    capacity: usize,
    /// How long a container found nowhere stays unknown; `None`: for good.
    retry_unknown: Option<Duration>,
}

impl<T> ByContainer<T> {
    pub fn new(capacity: usize, retry_unknown: Option<Duration>) -> Self {
        Self { known: HashMap::new(), capacity: capacity.max(1), retry_unknown }
    }

    /// What is known of `id`, else what `load` finds. A container `load`
    /// does not find is remembered as unknown, so its processes do not
    /// repeat the search; an error is not remembered.
    pub fn get_or_load(&mut self, id: &str, load: impl FnOnce() -> io::Result<Option<T>>) -> Option<Arc<T>> {
        match self.known.get(id) {
            Some(Ok(found)) => return Some(found.clone()),
            Some(Err(at)) if self.retry_unknown.is_none_or(|after| at.elapsed() < after) => return None,
            _ => {}
        }
        let found = load().ok()?.map(Arc::new);
        if self.known.len() >= self.capacity {
            // Bounded: an evicted id only costs another search.
            self.known.clear();
        }
        self.known.insert(id.to_owned(), found.clone().ok_or_else(Instant::now));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_unknown_failed_and_bounded() {
        let mut cache = ByContainer::new(2, None);
        assert_eq!(cache.get_or_load("a", || Ok(Some(1))).as_deref(), Some(&1));
        assert_eq!(cache.get_or_load("a", || Ok(Some(2))).as_deref(), Some(&1), "loaded once");
        assert_eq!(cache.get_or_load("b", || Ok(None)), None);
        assert_eq!(cache.get_or_load("b", || Ok(Some(3))), None, "unknown for good");
        // Two known: the next one starts the table over.
        assert_eq!(cache.get_or_load("c", || Err(io::ErrorKind::Other.into())), None);
        assert_eq!(cache.get_or_load("c", || Ok(Some(4))).as_deref(), Some(&4), "an error is not remembered");
        assert_eq!(cache.get_or_load("a", || Ok(Some(5))).as_deref(), Some(&5), "evicted");

        let mut retrying = ByContainer::new(4, Some(Duration::ZERO));
        assert_eq!(retrying.get_or_load("x", || Ok(None)), None);
        assert_eq!(retrying.get_or_load("x", || Ok(Some(6))).as_deref(), Some(&6), "retried");
    }
}
