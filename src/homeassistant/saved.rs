//! What the bridge keeps across restarts, in `<state_dir>/homeassistant.json`:
//! the discovery topics announced (those not announced at the next start are
//! removed), the teach labels and the states shown.

use std::path::{Path, PathBuf};

use crate::names::{UNRECOGNIZED, UNTRAINED};

/// What the bridge keeps across restarts, in `<state_dir>/homeassistant.json`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Saved {
    /// Every discovery config topic announced, sorted: those not announced at the
    /// next start are removed.
    pub discovery_topics: Vec<String>,
    /// The label each classifier's dashboard teaches, by classifier name.
    pub teach_labels: std::collections::BTreeMap<String, String>,
    /// The state each classifier showed at the last save, by classifier name: a
    /// class among them stays an option at the next start until the first state
    /// replaces it (its retained state may still say it).
    pub shown: std::collections::BTreeMap<String, String>,
}

impl Saved {
    /// Read `path`; a missing file is the default, an unreadable or damaged one
    /// too (logged: configs of deleted entities may then stay behind).
    pub fn load(path: &std::path::Path) -> Self {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::default(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the saved Home Assistant state");
                return Self::default();
            }
        };
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "the saved Home Assistant state is damaged; ignored");
            Self::default()
        })
    }

    /// Drop what this device could not have saved: discovery topics that are not
    /// `<prefix>/<component>/<device_id>/<key>/config` of an edgehead component
    /// (at most [`MAX_SAVED_TOPICS`]), teach labels and shown states that are not
    /// valid labels (or edgehead's own states). A file edited by hand or damaged
    /// can then neither clear other retained topics nor announce bad options.
    pub fn sanitize(mut self, prefix: &str, device_id: &str) -> Self {
        let before = (
            self.discovery_topics.len(),
            self.teach_labels.len(),
            self.shown.len(),
        );
        let ours = |t: &String| {
            let Some(rest) = t.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
                return false;
            };
            let levels: Vec<&str> = rest.split('/').collect();
            levels.len() == 4
                && COMPONENTS.contains(&levels[0])
                && levels[1] == device_id
                && (1..=200).contains(&levels[2].len())
                && levels[2]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && levels[3] == "config"
        };
        self.discovery_topics.retain(ours);
        self.discovery_topics.truncate(MAX_SAVED_TOPICS);
        let valid = |l: &String| crate::names::normalize_label(l).is_ok_and(|n| n == *l);
        self.teach_labels.retain(|_, l| valid(l));
        self.shown
            .retain(|_, s| valid(s) || s == UNRECOGNIZED || s == UNTRAINED);
        let after = (
            self.discovery_topics.len(),
            self.teach_labels.len(),
            self.shown.len(),
        );
        if after != before {
            tracing::warn!(
                dropped_topics = before.0 - after.0,
                dropped_teach_labels = before.1 - after.1,
                dropped_states = before.2 - after.2,
                "ignored entries of the saved Home Assistant state that this device could not have written"
            );
        }
        self
    }
}

/// Most discovery topics read back from the saved state.
pub const MAX_SAVED_TOPICS: usize = 20_000;
/// The discovery components edgehead announces.
pub const COMPONENTS: &[&str] = &[
    "sensor",
    "binary_sensor",
    "event",
    "image",
    "select",
    "text",
    "button",
];

/// Where the bridge keeps what survives a restart ([`Saved`]).
pub fn saved_file(state_dir: &Path) -> PathBuf {
    state_dir.join("homeassistant.json")
}
