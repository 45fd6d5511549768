//! The smoother: a majority vote over the last frames' labels (the stable label),
//! and the publish rule (`every_frame` or `on_change`, at most every
//! `min_interval_ms`). A pure state machine, time passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::{PredictionConfig, PublishMode};

/// Majority vote over the last frames' labels, and the decision to publish.
#[derive(Debug)]
pub struct Smoother {
    window: VecDeque<Option<String>>,
    size: usize,
    stable: Option<String>,
    mode: PublishMode,
    min_interval: Duration,
    last_published: Option<(Option<String>, Instant)>,
}

impl Smoother {
    pub fn new(c: &PredictionConfig) -> Self {
        Self {
            window: VecDeque::with_capacity(c.smoothing_window),
            size: c.smoothing_window.max(1),
            stable: None,
            mode: c.publish,
            min_interval: Duration::from_millis(c.min_interval_ms),
            last_published: None,
        }
    }

    /// Add a frame's label; returns the stable label: the label of more than half of
    /// the window, or the previous stable label while there is no majority.
    pub fn push(&mut self, label: Option<String>) -> Option<String> {
        if self.window.len() == self.size {
            self.window.pop_front();
        }
        self.window.push_back(label);
        let mut best: Option<(&Option<String>, usize)> = None;
        for l in &self.window {
            let n = self.window.iter().filter(|x| *x == l).count();
            if best.is_none_or(|(_, m)| n > m) {
                best = Some((l, n));
            }
        }
        if let Some((l, n)) = best {
            if n * 2 > self.window.len() {
                self.stable = l.clone();
            }
        }
        self.stable.clone()
    }

    /// Whether every label in the window is the stable one (nothing left to settle).
    pub fn settled(&self) -> bool {
        self.window.iter().all(|l| *l == self.stable)
    }

    /// Forget the votes (they came from a head that was replaced); the stable
    /// label stays until the next vote.
    pub fn forget_votes(&mut self) {
        self.window.clear();
    }

    /// Whether a prediction with stable label `label` that [`Smoother::should_publish`]
    /// refused is waiting for the minimum interval (rather than not wanted: the
    /// same label again in `on_change` mode).
    pub fn holds_back(&self, label: &Option<String>) -> bool {
        match &self.last_published {
            None => false,
            Some((last, _)) => self.mode == PublishMode::EveryFrame || last != label,
        }
    }

    /// Whether a prediction with stable label `label` should be published at `now`.
    pub fn should_publish(&mut self, label: &Option<String>, now: Instant) -> bool {
        let due = match &self.last_published {
            None => true,
            Some((last, at)) => {
                now.duration_since(*at) >= self.min_interval
                    && (self.mode == PublishMode::EveryFrame || last != label)
            }
        };
        if due {
            self.last_published = Some((label.clone(), now));
        }
        due
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Prediction settings of a smoothing `window`, a publish `mode` and a minimum
    /// interval.
    pub fn cfg(window: usize, mode: PublishMode, min_ms: u64) -> PredictionConfig {
        PredictionConfig {
            publish: mode,
            min_interval_ms: min_ms,
            top_k: 3,
            smoothing_window: window,
        }
    }

    fn l(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn smoothing_needs_a_majority_to_change_label() {
        let mut s = Smoother::new(&cfg(3, PublishMode::EveryFrame, 0));
        assert_eq!(s.push(l("cat")), l("cat"));
        assert_eq!(s.push(l("dog")), l("cat")); // 1 of 2: no majority, keep cat
        assert_eq!(s.push(l("dog")), l("dog")); // 2 of 3
        assert_eq!(s.push(l("cat")), l("dog")); // dog, dog, cat
        assert_eq!(s.push(l("cat")), l("cat")); // dog, cat, cat
        let mut one = Smoother::new(&cfg(1, PublishMode::EveryFrame, 0));
        assert_eq!(one.push(l("a")), l("a"));
        assert_eq!(one.push(None), None);
    }

    #[test]
    fn on_change_publishes_only_changes_and_respects_the_interval() {
        let mut s = Smoother::new(&cfg(1, PublishMode::OnChange, 1000));
        let t0 = Instant::now();
        assert!(s.should_publish(&l("cat"), t0));
        assert!(!s.should_publish(&l("cat"), t0 + Duration::from_secs(5)));
        // A change inside the interval waits ...
        assert!(!s.should_publish(&l("dog"), t0 + Duration::from_millis(500)));
        // ... and goes out once the interval has passed.
        assert!(s.should_publish(&l("dog"), t0 + Duration::from_millis(1500)));
        let mut every = Smoother::new(&cfg(1, PublishMode::EveryFrame, 0));
        assert!(every.should_publish(&l("cat"), t0));
        assert!(every.should_publish(&l("cat"), t0));
    }
}
