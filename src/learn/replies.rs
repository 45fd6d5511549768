//! Idempotent requests: the answers to recent changing requests, by key, so a
//! repeat is answered again instead of being carried out twice.
//!
//! Follows the request/response convention of Zigbee2MQTT (`transaction` echoed in
//! the answer) with the idempotency rule of HTTP APIs that take an idempotency key:
//! the same key within the window gets the first answer. A key is a digest of the
//! operation, the caller's `transaction`, the topic and the payload: a transaction
//! reused for another request (a client whose counter restarted) is a new request.
//! Only successful answers are kept, so a request refused for a passing reason
//! (`busy`, a full disk) can be retried with the same transaction. Times are
//! tokio's (a paused clock in tests).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Most answers kept, whatever the window: bounds memory under a flood.
pub const MAX_ENTRIES: usize = 1024;

/// What is known about a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Never seen in the window: carry the request out.
    New,
    /// Being carried out now (a `label_frame` still collecting frames): its answer
    /// will be published with the same transaction; do nothing.
    Pending,
    /// Carried out: publish this answer again.
    Answered(Value),
}

/// Recent answers by key, forgotten after `window`.
#[derive(Debug)]
pub struct Replies {
    window: Duration,
    entries: HashMap<String, (Instant, Option<Value>)>,
    order: VecDeque<(Instant, String)>,
}

/// Longest `transaction` accepted, as JSON text: it is echoed in answers and kept
/// with them for the window.
pub const MAX_TRANSACTION_BYTES: usize = 256;

/// The key of a request: SHA-256 (hex) of its operation, `transaction`, topic and
/// payload. Recorded for every changing request; looked up when the request has a
/// transaction or is a redelivery (DUP flag): sending the same `label_frame`
/// twice on purpose, without a transaction, labels two frames.
pub fn key(op: &str, transaction: Option<&Value>, topic: &str, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [op.as_bytes(), b"\0", topic.as_bytes(), b"\0"] {
        h.update(part);
    }
    if let Some(t) = transaction {
        h.update(t.to_string().as_bytes());
    }
    h.update(b"\0");
    h.update(payload);
    format!("{:x}", h.finalize())
}

impl Replies {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, k)) = self.order.front() {
            if now.duration_since(*at) < self.window && self.order.len() <= MAX_ENTRIES {
                break;
            }
            if self.entries.get(k).is_some_and(|(t, _)| t == at) {
                self.entries.remove(k);
            }
            self.order.pop_front();
        }
    }

    /// What is known about `key` at `now`.
    pub fn check(&mut self, key: &str, now: Instant) -> Seen {
        self.expire(now);
        match self.entries.get(key) {
            None => Seen::New,
            Some((_, None)) => Seen::Pending,
            Some((_, Some(v))) => Seen::Answered(v.clone()),
        }
    }

    /// Mark `key` as being carried out.
    pub fn start(&mut self, key: &str, now: Instant) {
        self.insert(key, now, None);
    }

    /// Record the answer to `key`.
    pub fn finish(&mut self, key: &str, answer: &Value, now: Instant) {
        self.insert(key, now, Some(answer.clone()));
    }

    /// Forget `key` (its request was refused and changed nothing).
    pub fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }

    fn insert(&mut self, key: &str, now: Instant, v: Option<Value>) {
        if self.window.is_zero() {
            return;
        }
        self.entries.insert(key.to_string(), (now, v));
        self.order.push_back((now, key.to_string()));
        self.expire(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_repeated_key_gets_the_first_answer_until_the_window_ends() {
        let mut r = Replies::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let k = key("add_sample", Some(&json!("t1")), "x", b"");
        assert_eq!(r.check(&k, t0), Seen::New);
        r.start(&k, t0);
        assert_eq!(r.check(&k, t0), Seen::Pending);
        r.finish(&k, &json!({"status": "ok"}), t0);
        assert_eq!(
            r.check(&k, t0 + Duration::from_secs(59)),
            Seen::Answered(json!({"status": "ok"}))
        );
        assert_eq!(r.check(&k, t0 + Duration::from_secs(61)), Seen::New);
    }

    #[test]
    fn keys_by_transaction_or_by_content() {
        let t = json!(7);
        assert_ne!(
            key("add_sample", Some(&t), "a", b"1"),
            key("remove_sample", Some(&t), "a", b"1")
        );
        // A transaction reused for another request is another key.
        assert_ne!(
            key("add_sample", Some(&t), "a", b"1"),
            key("add_sample", Some(&t), "a", b"2")
        );
        assert_ne!(
            key("add_sample", Some(&t), "add_sample/cat", b"1"),
            key("add_sample", Some(&t), "add_sample/dog", b"1")
        );
        assert_ne!(
            key("add_sample", Some(&t), "a", b"1"),
            key("add_sample", None, "a", b"1")
        );
        let d1 = key("add_sample", None, "a", b"1");
        assert_eq!(d1, key("add_sample", None, "a", b"1"));
        assert_ne!(d1, key("add_sample", None, "a", b"2"));
        assert_ne!(d1, key("add_sample", None, "b", b"1"));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let mut r = Replies::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        for i in 0..5 * MAX_ENTRIES {
            r.finish(&format!("k{i}"), &json!(i), t0);
        }
        assert!(r.entries.len() <= MAX_ENTRIES + 1);
        assert!(r.order.len() <= MAX_ENTRIES + 1);
        assert_eq!(r.check("k0", t0), Seen::New);
    }
}
