//! What the user writes: the top-level sections of the configuration file as
//! serde types (`deny`-by-report: unknown keys are found by [`super::load`]).
//! The `[source]`, `[backbone]`, `[mqtt]` and `[[classifiers]]` sections have
//! files of their own. Every field has a default, so an empty file is a valid
//! configuration: the demo set-up.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::backbone::BackboneConfig;
use super::classifiers::ClassifierConfig;
use super::head::{HeadConfig, PredictionConfig};
use super::mqtt::MqttConfig;
use super::source::SourceConfig;
use super::web::WebConfig;

/// The configuration as written by the user. Every field has a default, so an empty
/// file (or none) is a valid configuration: the demo set-up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RawConfig {
    /// Names this device in MQTT topics and client ids; empty means the host name.
    pub device_id: String,
    /// Where samples, embeddings and trained heads are kept (relative: to the working directory).
    pub state_dir: PathBuf,
    pub log: LogConfig,
    pub source: SourceConfig,
    pub backbone: BackboneConfig,
    pub head: HeadConfig,
    pub learn: LearnConfig,
    pub predictions: PredictionConfig,
    /// Named classifiers on regions of the frame (`[[classifiers]]`); none: one
    /// classifier named `default` over the whole frame.
    pub classifiers: Vec<ClassifierConfig>,
    pub mqtt: MqttConfig,
    pub homeassistant: HomeAssistantConfig,
    pub web: WebConfig,
    pub shutdown: ShutdownConfig,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            device_id: String::new(),
            state_dir: PathBuf::from("state"),
            log: LogConfig::default(),
            source: SourceConfig::default(),
            backbone: BackboneConfig::default(),
            head: HeadConfig::default(),
            learn: LearnConfig::default(),
            predictions: PredictionConfig::default(),
            classifiers: Vec::new(),
            mqtt: MqttConfig::default(),
            homeassistant: HomeAssistantConfig::default(),
            web: WebConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `edgehead=debug,rumqttd=warn`; `RUST_LOG` wins.
    pub level: String,
    /// Seconds between the summary lines (frames captured, inferred, dropped, published).
    pub summary_interval_secs: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
            summary_interval_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LearnConfig {
    /// Wait this long after the last new sample before retraining, so a burst trains once.
    pub debounce_ms: u64,
    pub max_classes: usize,
    pub max_samples: usize,
    /// Largest accepted sample image, in bytes (encoded) and pixels per side (decoded).
    pub max_image_bytes: usize,
    pub max_image_side: u32,
    /// Memory one decoded image may take, in MiB: width × height × bytes per pixel
    /// of what the decoder holds. JPEGs above it are decoded at 1/2, 1/4 or 1/8 size
    /// (DCT scaling); other images above it are refused. 64 MiB fits a 512 MB board.
    pub decode_budget_mib: u32,
    /// How long a request's `transaction` is remembered: a repeat within this window
    /// gets the first answer again instead of being carried out twice.
    pub idempotency_window_secs: u64,
    /// Side of the thumbnail kept for each sample, used to re-embed after a backbone change.
    pub thumbnail_side: u32,
    /// Requests waiting for the learning task; when full, requests are answered `busy`.
    pub queue: usize,
    /// Operations refused by every route, MQTT and the console alike (for
    /// instance `reset`, `delete_class`, `delete_classifier`).
    pub disabled_operations: Vec<String>,
    /// Largest bundle accepted by an import, in MiB: what it may inflate to,
    /// and (over HTTP, held in memory) what may be uploaded. Checked while
    /// reading, so a compressed bomb is refused before it fills the disk. 128
    /// fits a 512 MB board and about 5,000 samples.
    pub max_bundle_mib: u64,
}

impl Default for LearnConfig {
    fn default() -> Self {
        Self {
            debounce_ms: 300,
            max_classes: 100,
            max_samples: 5000,
            max_image_bytes: 8 << 20,
            max_image_side: 8192,
            decode_budget_mib: 64,
            idempotency_window_secs: 600,
            thumbnail_side: 320,
            queue: 16,
            disabled_operations: Vec::new(),
            max_bundle_mib: 128,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HomeAssistantConfig {
    /// Publish MQTT discovery messages so Home Assistant creates the entities by itself.
    pub discovery: bool,
    /// Discovery prefix; Home Assistant's birth message is `<prefix>/status`.
    pub prefix: String,
    /// Seconds without a frame after which the label, confidence and class
    /// sensors show `unavailable` (Home Assistant's `expire_after`); 0: never. The
    /// state is re-published every third of it while frames arrive, so it must be
    /// over 3 frame intervals of the source.
    pub expire_after_secs: u64,
    /// Publish each classifier's crop as JPEG on `<base>/<name>/image` (retained;
    /// the image entity) at most this often, seconds, and at each label change;
    /// 0: no image.
    pub image_interval_secs: f64,
    /// Longest side of that JPEG, pixels (larger crops are scaled down).
    pub image_max_side: u32,
    /// A binary sensor per class ("is it `open` now?").
    pub class_sensors: bool,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        Self {
            discovery: true,
            prefix: "homeassistant".into(),
            expire_after_secs: 15,
            image_interval_secs: 10.0,
            image_max_side: 640,
            class_sensors: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ShutdownConfig {
    /// After SIGTERM, how long the tasks get to finish before the daemon gives up on them.
    pub grace_secs: f64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_secs: 10.0 }
    }
}
