//! Remembering which transactions we have already taken. The homeserver retries a
//! transaction until it gets a 200 (our answer may have been lost on the way), so the same
//! `txnId` can arrive twice; the spec makes the ID the key for handling it once.

use std::collections::{HashSet, VecDeque};

/// The last `capacity` transaction IDs, oldest first out. A homeserver retries only its
/// oldest unanswered transaction, so a short memory is enough.
pub struct RecentTransactions {
    capacity: usize,
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl RecentTransactions {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::with_capacity(capacity),
            seen: HashSet::with_capacity(capacity),
        }
    }

    /// Records `txn_id`; `false` if it was already there (a repeat to answer, not handle).
    pub fn insert(&mut self, txn_id: &str) -> bool {
        if self.seen.contains(txn_id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(txn_id.to_owned());
        self.seen.insert(txn_id.to_owned());
        true
    }

    /// Forgets `txn_id` again, for a transaction we took but could not hand on (shutting
    /// down): the homeserver's retry must then be handled.
    pub fn remove(&mut self, txn_id: &str) {
        if self.seen.remove(txn_id) {
            self.order.retain(|id| id != txn_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_transaction_is_recognised() {
        let mut recent = RecentTransactions::new(2);
        assert!(recent.insert("1"));
        assert!(!recent.insert("1"));
    }

    #[test]
    fn the_oldest_transaction_is_forgotten_past_capacity() {
        let mut recent = RecentTransactions::new(2);
        assert!(recent.insert("1"));
        assert!(recent.insert("2"));
        assert!(recent.insert("3"));
        assert!(recent.insert("1"), "1 was pushed out by 3");
        assert!(!recent.insert("3"));
    }

    #[test]
    fn a_removed_transaction_is_handled_again() {
        let mut recent = RecentTransactions::new(2);
        assert!(recent.insert("1"));
        recent.remove("1");
        assert!(recent.insert("1"));
    }
}
