//! The retained messages the daemon keeps, behind one lock: the last payload of
//! every retained topic it publishes (published again after each connect and after
//! Home Assistant's birth message), the removals not sent yet, and the topics a
//! full queue refused while connected (owed, sent when there is room).
//!
//! A broker without persistence forgets retained messages when it restarts, so
//! the daemon is their source of truth. Memory is bounded by the number of topics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Sets {
    /// The last payload of each kept topic.
    kept: BTreeMap<String, Vec<u8>>,
    /// Topics whose removal (an empty retained message) is not sent yet.
    clears: BTreeSet<String>,
    /// Topics (kept or cleared) a full queue refused while connected.
    owed: BTreeSet<String>,
}

/// What a kept topic is owed: its payload, or its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owed {
    Payload(Vec<u8>),
    Clear,
    /// Neither any more (a later change settled it).
    Nothing,
}

/// The kept retained messages; see the module documentation.
#[derive(Debug, Default)]
pub struct Retained {
    sets: Mutex<Sets>,
}

impl Retained {
    fn with<T>(&self, f: impl FnOnce(&mut Sets) -> T) -> Option<T> {
        self.sets.lock().ok().map(|mut s| f(&mut s))
    }

    /// Keep `payload` as `topic`'s (a removal owed for it is void).
    pub fn keep(&self, topic: &str, payload: Vec<u8>) {
        self.with(|s| {
            s.clears.remove(topic);
            s.kept.insert(topic.to_string(), payload);
        });
    }

    /// Stop keeping `topic` and owe its removal.
    pub fn clear(&self, topic: &str) {
        self.with(|s| {
            s.kept.remove(topic);
            s.clears.insert(topic.to_string());
        });
    }

    /// Remember that `topic` could not be queued.
    pub fn owe(&self, topic: &str) {
        self.with(|s| s.owed.insert(topic.to_string()));
    }

    /// Take the owed topics.
    pub fn take_owed(&self) -> Vec<String> {
        self.with(|s| std::mem::take(&mut s.owed).into_iter().collect())
            .unwrap_or_default()
    }

    /// What `topic` is owed now.
    pub fn owed(&self, topic: &str) -> Owed {
        self.with(|s| match s.kept.get(topic) {
            Some(p) => Owed::Payload(p.clone()),
            None if s.clears.contains(topic) => Owed::Clear,
            None => Owed::Nothing,
        })
        .unwrap_or(Owed::Nothing)
    }

    /// `topic`'s removal went out.
    pub fn cleared(&self, topic: &str) {
        self.with(|s| s.clears.remove(topic));
    }

    /// Every kept topic.
    pub fn topics(&self) -> Vec<String> {
        self.with(|s| s.kept.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Topics whose removal has not been sent yet.
    pub fn pending_clears(&self) -> Vec<String> {
        self.with(|s| s.clears.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_is_owed_its_last_payload_or_its_removal() {
        let r = Retained::default();
        r.keep("a", b"1".to_vec());
        r.keep("a", b"2".to_vec());
        assert_eq!(r.owed("a"), Owed::Payload(b"2".to_vec()));
        r.clear("a");
        assert_eq!(r.owed("a"), Owed::Clear);
        assert_eq!(r.pending_clears(), vec!["a".to_string()]);
        r.keep("a", b"3".to_vec());
        assert!(
            r.pending_clears().is_empty(),
            "a new payload voids the removal"
        );
        r.clear("a");
        r.cleared("a");
        assert_eq!(r.owed("a"), Owed::Nothing);
        r.owe("b");
        r.owe("b");
        assert_eq!(r.take_owed(), vec!["b".to_string()]);
        assert!(r.take_owed().is_empty());
    }
}
