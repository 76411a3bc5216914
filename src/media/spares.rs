//! A few spare buffers kept for reuse, inside the struct that owns them.
//!
//! The media pipeline hands its frame and packet buffers out and takes them back each tick.
//! Kept in a `Vec<Vec<_>>`, the spares would live in an allocation of their own: one more cache
//! line to fetch for every call served, each tick, when a worker serves hundreds of calls and
//! none of their state is still in the cache. Here they sit beside the owner's other fields.

/// Up to `N` spare values, last in first out.
#[derive(Debug, Clone)]
pub(crate) struct Spares<T, const N: usize> {
    items: [Option<T>; N],
    len: usize,
}

impl<T, const N: usize> Default for Spares<T, N> {
    fn default() -> Self {
        Self {
            items: std::array::from_fn(|_| None),
            len: 0,
        }
    }
}

impl<T, const N: usize> Spares<T, N> {
    /// Keeps `v` if there is room; else it is dropped.
    pub(crate) fn put(&mut self, v: T) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(v);
            self.len += 1;
        }
    }

    /// The last value kept, if any.
    pub(crate) fn take(&mut self) -> Option<T> {
        let i = self.len.checked_sub(1)?;
        self.len = i;
        self.items.get_mut(i).and_then(Option::take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_n_and_gives_the_last_back_first() {
        let mut s: Spares<Vec<u8>, 2> = Spares::default();
        assert_eq!(s.take(), None);
        s.put(vec![1]);
        s.put(vec![2]);
        s.put(vec![3]);
        assert_eq!(s.take(), Some(vec![2]), "the third was dropped");
        assert_eq!(s.take(), Some(vec![1]));
        assert_eq!(s.take(), None);
    }
}
