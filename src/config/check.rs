//! The problems found in a configuration ([`Problem`], [`ConfigError`]: every one
//! reported at once, each with its key) and the [`Checker`] that collects them,
//! with the checks shared by sections (ranges, files, backoffs, head and
//! prediction tables).

use std::fmt;
use std::path::Path;

use super::head::{HeadConfig, PredictionConfig, UnknownThreshold};

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, such as `mqtt.port`.
    pub key: String,
    pub message: String,
}

/// Everything wrong with a configuration, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{})",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// An error of one problem.
    pub fn one(key: &str, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                key: key.into(),
                message: message.into(),
            }],
        }
    }
}

/// Collects the problems of one validation.
#[derive(Debug, Default)]
pub struct Checker {
    pub problems: Vec<Problem>,
}

impl Checker {
    /// A problem under `key`.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// A problem under `key` unless `ok`.
    pub fn check(&mut self, ok: bool, key: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.problem(key, message());
        }
    }

    pub fn range<T: PartialOrd + fmt::Display + Copy>(&mut self, key: &str, v: T, lo: T, hi: T) {
        self.check(v >= lo && v <= hi, key, || {
            format!("{v} is out of range ({lo} to {hi})")
        });
    }

    /// `path` names a file that can be opened.
    pub fn file(&mut self, key: &str, path: &Path) {
        if path.as_os_str().is_empty() {
            self.problem(key, "must name a file");
        } else if let Err(e) = std::fs::File::open(path) {
            self.problem(key, format!("cannot open {}: {e}", path.display()));
        }
    }

    /// A reconnect or restart backoff: `min` 1 ms to 10 minutes, `max` not below it.
    pub fn backoff(&mut self, key: &str, min: u64, max: u64, names: (&str, &str)) {
        self.range(&format!("{key}.{}", names.0), min, 1, 600_000);
        self.check(max >= min, &format!("{key}.{}", names.1), || {
            format!("must not be below {key}.{}", names.0)
        });
    }

    /// Check a `[head]` table (or a classifier's, under `key`); returns its
    /// unknown threshold.
    pub fn head(&mut self, key: &str, h: &HeadConfig) -> UnknownThreshold {
        self.range(
            &format!("{key}.auto_min_samples"),
            h.auto_min_samples,
            1,
            10_000,
        );
        self.check(
            h.l2.is_finite() && (0.0..=1000.0).contains(&h.l2),
            &format!("{key}.l2"),
            || format!("{} must be a number from 0 to 1000", h.l2),
        );
        self.range(
            &format!("{key}.max_iterations"),
            h.max_iterations,
            1,
            100_000,
        );
        match h.unknown_threshold.trim() {
            "auto" => UnknownThreshold::Auto,
            "off" => UnknownThreshold::Off,
            other => match other.parse::<f32>() {
                Ok(v) if (-1.0..=1.0).contains(&v) => UnknownThreshold::Fixed(v),
                _ => {
                    self.problem(
                        &format!("{key}.unknown_threshold"),
                        format!(
                            "{other:?} must be \"auto\", \"off\" or a cosine similarity from -1 to 1"
                        ),
                    );
                    UnknownThreshold::Off
                }
            },
        }
    }

    /// Check a `[predictions]` table (or a classifier's, under `key`).
    pub fn predictions(&mut self, key: &str, p: &PredictionConfig) {
        self.range(
            &format!("{key}.min_interval_ms"),
            p.min_interval_ms,
            0,
            3_600_000,
        );
        self.range(&format!("{key}.top_k"), p.top_k, 1, 100);
        self.range(
            &format!("{key}.smoothing_window"),
            p.smoothing_window,
            1,
            100,
        );
    }
}
