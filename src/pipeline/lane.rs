//! One classifier as the inference task sees it ([`Lane`]): the shared handles
//! and what the task remembers between frames (the last run's grid and features,
//! the smoother, a held-back prediction, when it last told the sink).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::smoother::Smoother;
use crate::classifier::gate::{self, Run};
use crate::classifier::Classifier;
use crate::head::Head;
use crate::mqtt::payload::Prediction;
use crate::region::Rect;

/// What the last backbone run of a lane saw and gave.
pub(super) struct LastRun {
    pub thumb: gate::Thumb,
    pub at: Instant,
    pub features: Vec<f32>,
    pub inference: Duration,
}

/// A crop the gate let through on this frame.
pub(super) struct Due {
    pub lane: usize,
    pub why: Run,
    pub rect: Rect,
    pub thumb: gate::Thumb,
}

pub(super) struct Lane {
    pub c: Classifier,
    pub smoother: Smoother,
    /// The grey grid, time and features of the last backbone run.
    pub last: Option<LastRun>,
    /// Runs still owed to the smoothing window after a change ([`gate::Last::settling`]).
    pub settling: u32,
    /// The head the last prediction used, to notice a retrained one.
    pub head_used: Option<Arc<Head>>,
    /// The stable label last published or held, for `recent`'s label changes.
    pub stable: Option<Option<String>>,
    /// A prediction the publish rule held back (`min_interval_ms`), sent from a
    /// later frame once it is due even if the gate skips that frame.
    pub pending: Option<Prediction>,
    pub outside_logged: Option<Instant>,
    /// When [`super::PredictionSink::alive`] was last called.
    pub alive_at: Option<Instant>,
    /// When the last image was sent, and the stable label then.
    pub image_at: Option<(Instant, Option<Option<String>>)>,
}

impl Lane {
    pub fn new(c: Classifier) -> Self {
        Self {
            smoother: Smoother::new(&c.spec.predictions),
            c,
            last: None,
            settling: 0,
            head_used: None,
            stable: None,
            pending: None,
            outside_logged: None,
            alive_at: None,
            image_at: None,
        }
    }

    /// The classifier's current head, and whether it differs from the one the
    /// last prediction used (retrained, reset, or the first one).
    pub fn head_now(&self) -> (Option<Arc<Head>>, bool) {
        let head = self.c.head.load_full();
        let changed = match (&head, &self.head_used) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (a, b) => a.is_some() != b.is_some(),
        };
        (head, changed)
    }

    /// The region of a `width`×`height` frame, or `None` when it does not fit
    /// (counted as skipped, logged at most once a minute).
    pub fn rect(&mut self, width: u32, height: u32, now: Instant) -> Option<Rect> {
        match self.c.spec.region.rect(width, height) {
            Ok(r) => Some(r),
            Err(e) => {
                self.c.gate.skipped(gate::Skip::OutsideFrame);
                if self
                    .outside_logged
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
                {
                    tracing::warn!(classifier = %self.c.spec.name, error = %e, "the classifier's region does not fit the frame; skipped (logged once a minute)");
                    self.outside_logged = Some(now);
                }
                None
            }
        }
    }

    /// The gate's decision on this frame's grid `thumb` ([`gate::decide`]).
    pub fn decide(&self, thumb: &gate::Thumb, now: Instant) -> Result<Run, gate::Skip> {
        let last = self.last.as_ref().map(|l| gate::Last {
            change: gate::change(thumb, &l.thumb),
            age: now.duration_since(l.at),
            settling: self.settling,
        });
        gate::decide(&self.c.spec.trigger, last)
    }

    /// Record a backbone run on this frame.
    pub fn ran(&mut self, d: Due, now: Instant, features: Vec<f32>, inference: Duration) {
        self.c.gate.ran(d.why);
        self.settling = match d.why {
            Run::First | Run::Changed => {
                self.c.spec.predictions.smoothing_window.saturating_sub(1) as u32
            }
            _ => self.settling.saturating_sub(1),
        };
        self.last = Some(LastRun {
            thumb: d.thumb,
            at: now,
            features,
            inference,
        });
    }
}
