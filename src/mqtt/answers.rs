//! The answers waiting to be published, apart from the client's queue.
//!
//! The MQTT client has one bounded outgoing queue for everything: predictions,
//! states, discovery, answers. A burst of requests (each answered at once with
//! `busy` when its classifier's queue is full) used to fill it, and answers that
//! found it full were dropped, so a client could not tell whether its request
//! ran. Answers now wait here, in order, and go out as the client's queue takes
//! them (the connection task retries after every event); while any waits,
//! predictions are dropped instead (a later one replaces them), so answers come
//! first.
//!
//! Memory is bounded: at most [`MAX_WAITING`] answers and [`MAX_WAITING_BYTES`]
//! bytes wait. Beyond that the client is not reading them (or the broker is
//! gone for long), and a new answer is dropped, logged and counted
//! (`answers_dropped`): the one case where a request goes unanswered.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Most answers waiting at once.
pub const MAX_WAITING: usize = 10_000;
/// Most bytes of answers (topics and payloads) waiting at once: 8 MiB.
pub const MAX_WAITING_BYTES: usize = 8 << 20;

/// One answer: its topic, payload, QoS and retain flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

impl Answer {
    fn bytes(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Answer>,
    bytes: usize,
}

/// The waiting answers, in the order they were given; see the module
/// documentation.
#[derive(Debug, Default)]
pub struct Answers {
    queue: Mutex<Queue>,
}

impl Answers {
    /// Queue `a` behind the answers already waiting. `false` when the bounds are
    /// reached (the answer is not queued).
    pub fn push(&self, a: Answer) -> bool {
        let Ok(mut q) = self.queue.lock() else {
            return false;
        };
        if q.waiting.len() >= MAX_WAITING || q.bytes + a.bytes() > MAX_WAITING_BYTES {
            return false;
        }
        q.bytes += a.bytes();
        q.waiting.push_back(a);
        true
    }

    /// Hand the waiting answers, oldest first, to `send` until it refuses one
    /// (a full client queue: that one stays first). Returns how many are left.
    pub fn flush(&self, mut send: impl FnMut(&Answer) -> bool) -> usize {
        let Ok(mut q) = self.queue.lock() else {
            return 0;
        };
        while let Some(a) = q.waiting.front() {
            if !send(a) {
                break;
            }
            let n = a.bytes();
            q.waiting.pop_front();
            q.bytes -= n;
        }
        q.waiting.len()
    }

    /// Whether answers are waiting.
    pub fn any(&self) -> bool {
        self.queue.lock().is_ok_and(|q| !q.waiting.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(i: usize, size: usize) -> Answer {
        Answer {
            topic: format!("t/{i}"),
            payload: vec![b'x'; size],
            qos: 1,
            retain: false,
        }
    }

    #[test]
    fn answers_go_out_in_order_as_room_comes_and_none_is_lost() {
        let a = Answers::default();
        for i in 0..5 {
            assert!(a.push(answer(i, 10)));
        }
        // Room for two now.
        let mut sent = Vec::new();
        let left = a.flush(|x| {
            if sent.len() < 2 {
                sent.push(x.topic.clone());
                true
            } else {
                false
            }
        });
        assert_eq!(left, 3);
        assert!(a.any());
        // Then for everything.
        assert_eq!(
            a.flush(|x| {
                sent.push(x.topic.clone());
                true
            }),
            0
        );
        assert_eq!(sent, ["t/0", "t/1", "t/2", "t/3", "t/4"]);
        assert!(!a.any());
    }

    #[test]
    fn the_queue_is_bounded_in_count_and_bytes() {
        let a = Answers::default();
        for i in 0..MAX_WAITING {
            assert!(a.push(answer(i, 1)));
        }
        assert!(!a.push(answer(0, 1)), "count bound");
        let b = Answers::default();
        assert!(b.push(answer(0, MAX_WAITING_BYTES - 10)));
        assert!(!b.push(answer(1, 100)), "byte bound");
        // Once flushed, there is room again.
        assert_eq!(b.flush(|_| true), 0);
        assert!(b.push(answer(1, 100)));
    }
}
