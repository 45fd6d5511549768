//! Configuration: built-in defaults → TOML file → `EDGEHEAD__SECTION__KEY` environment,
//! deserialized into [`RawConfig`] and validated into [`Settings`].
//!
//! Every problem is reported at once, each with the key it concerns: unknown keys
//! (a typo in the file or in an environment variable), values of the wrong type and
//! values out of range.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the configuration.
pub const ENV_PREFIX: &str = "EDGEHEAD";
/// Separates the prefix, sections and keys in environment variable names.
pub const ENV_SEPARATOR: &str = "__";
/// What `print-config` shows in place of a secret.
pub const MASK: &str = "********";

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
    pub classifiers: Vec<crate::classifier::config::ClassifierConfig>,
    pub mqtt: MqttConfig,
    pub homeassistant: HomeAssistantConfig,
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
pub struct SourceConfig {
    /// Which source produces frames: `camera`, `files` or `synthetic`.
    pub kind: SourceKind,
    pub camera: CameraConfig,
    pub files: FilesConfig,
    pub synthetic: SyntheticConfig,
    pub command: CommandConfig,
    pub http: HttpConfig,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            kind: SourceKind::Files,
            camera: CameraConfig::default(),
            files: FilesConfig::default(),
            synthetic: SyntheticConfig::default(),
            command: CommandConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Camera,
    Files,
    Synthetic,
    /// A program writing MJPEG to its standard output (rpicam-vid, ffmpeg, GStreamer).
    Command,
    /// An HTTP camera: an MJPEG stream or snapshots.
    Http,
}

/// How the `http` source reads the camera.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HttpMode {
    /// One request whose body is `multipart/x-mixed-replace` JPEG images.
    #[default]
    Stream,
    /// A request for one JPEG image every `interval_ms`.
    Snapshot,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HttpConfig {
    /// `http://` or `https://` URL of the stream or the snapshot.
    pub url: String,
    pub mode: HttpMode,
    /// Snapshot mode: milliseconds between requests.
    pub interval_ms: u64,
    /// Basic or Digest authentication, as the camera asks; empty: none.
    pub username: String,
    pub password: String,
    /// A PEM file of CA certificates to trust instead of the system's (a camera
    /// with a self-signed certificate).
    pub ca_file: PathBuf,
    pub connect_timeout_ms: u64,
    /// Longest wait for data on a socket read, and for a frame in stream mode.
    pub read_timeout_ms: u64,
    /// First wait before reconnecting; doubles up to the maximum.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            mode: HttpMode::Stream,
            interval_ms: 1000,
            username: String::new(),
            password: String::new(),
            ca_file: PathBuf::new(),
            connect_timeout_ms: 5_000,
            read_timeout_ms: 10_000,
            reconnect_min_ms: 1_000,
            reconnect_max_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CommandConfig {
    /// The program to start (a path, or a name looked up in PATH); no shell.
    pub program: String,
    /// Its arguments, one string each.
    pub args: Vec<String>,
    /// Restart the program when it has sent no complete frame for this long.
    pub frame_timeout_ms: u64,
    /// First wait before restarting a program that exited or stalled; doubles up
    /// to the maximum.
    pub restart_min_ms: u64,
    pub restart_max_ms: u64,
}

impl Default for CommandConfig {
    fn default() -> Self {
        Self {
            program: String::new(),
            args: Vec::new(),
            frame_timeout_ms: 10_000,
            restart_min_ms: 1_000,
            restart_max_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CameraConfig {
    /// A device index (`0`) or a path (`/dev/video0`).
    pub device: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// `mjpeg` or `yuyv`: what the camera is asked to send.
    pub format: PixelFormat,
    /// First wait before reopening a camera that failed; doubles up to the maximum.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            device: "0".into(),
            width: 640,
            height: 480,
            fps: 15,
            format: PixelFormat::Mjpeg,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FilesConfig {
    /// A folder (every .jpg/.jpeg/.png below it, sorted) or a glob such as `shots/*.jpg`.
    pub path: String,
    /// Frames per second to replay at.
    pub fps: f64,
    /// Start again at the first image after the last one; otherwise the source ends.
    #[serde(rename = "loop")]
    pub repeat: bool,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            path: "tests/fixtures/images".into(),
            fps: 2.0,
            repeat: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SyntheticConfig {
    pub width: u32,
    pub height: u32,
    /// Frames per second; 0 means as fast as they are taken.
    pub fps: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            fps: 10.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BackboneConfig {
    /// The ONNX model; relative paths are taken from the working directory.
    pub model: PathBuf,
    /// Input width and height of the model, in pixels.
    pub input_width: u32,
    pub input_height: u32,
    /// `nchw` or `nhwc`.
    pub layout: Layout,
    /// Per channel (R, G, B), on pixel values 0–255: `x = (pixel - mean) / std`.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// `center_crop` (crop `crop_fraction` of the short side, then resize) or `stretch`.
    pub resize: ResizePolicy,
    pub crop_fraction: f32,
    /// The model output that holds the feature vector: its name, or its index as a number.
    pub output: String,
    /// Threads for tract's matrix products: a number, or `auto` (the CPUs this
    /// process may use, at most 4; see [`Threads`]). 1 leaves the other cores to
    /// capture, MQTT and learning.
    pub threads: Threads,
    /// Float precision of the backbone's arithmetic: `f32` (default), `f16`, or
    /// `auto` (f16 where the CPU has FP16 arithmetic, else f32; see [`Precision`]).
    /// The default stays f32: counted under qemu, f16 saved no instructions with
    /// tract's kernels for a Pi 5's CPU kind (README, Measured).
    pub precision: Precision,
    /// tract model transforms applied before optimization, in order (`conv_nhwc`
    /// runs convolutions channel-last, which speeds up depthwise convolutions).
    pub transforms: Vec<String>,
}

impl Default for BackboneConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("models/efficientnet-lite0-features-int8w.onnx"),
            input_width: 224,
            input_height: 224,
            layout: Layout::Nchw,
            mean: vec![127.0; 3],
            std: vec![128.0; 3],
            resize: ResizePolicy::CenterCrop,
            crop_fraction: 0.875,
            output: "features".into(),
            threads: Threads::Count(1),
            precision: Precision::F32,
            transforms: vec!["conv_nhwc".into()],
        }
    }
}

/// `backbone.threads`: a count, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    Count(usize),
    /// The CPUs this process may run on, as [`std::thread::available_parallelism`]
    /// counts them on Linux: the affinity mask (`sched_getaffinity`, e.g. `taskset`
    /// or systemd's `CPUAffinity=`) and the cgroup CPU quota (`cpu.max`, e.g.
    /// systemd's `CPUQuota=` or `docker --cpus`), capped at [`Threads::AUTO_MAX`].
    Auto,
}

impl Threads {
    /// The boards edgehead targets have four cores; more threads than that only
    /// contend with capture, MQTT and learning.
    pub const AUTO_MAX: usize = 4;

    /// The thread count to use.
    pub fn resolve(self) -> usize {
        match self {
            Threads::Count(n) => n.max(1),
            Threads::Auto => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, Self::AUTO_MAX),
        }
    }
}

impl std::str::FromStr for Threads {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Threads::Auto),
            n => n
                .parse::<usize>()
                .map(Threads::Count)
                .map_err(|_| format!("{s:?} is not a number of threads or \"auto\"")),
        }
    }
}

impl Serialize for Threads {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Threads::Count(n) => s.serialize_u64(*n as u64),
            Threads::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Threads {
    /// A number (TOML integer, or the text of one from the environment) or `auto`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Threads;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of threads or \"auto\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Threads, E> {
                usize::try_from(v)
                    .map(Threads::Count)
                    .map_err(|_| E::custom(format!("{v} is not a number of threads")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Threads, E> {
                usize::try_from(v)
                    .map(Threads::Count)
                    .map_err(|_| E::custom(format!("{v} is not a number of threads")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Threads, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `backbone.precision`: the float type of the backbone's arithmetic.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    /// Half precision for every operator but the depthwise convolutions (see
    /// [`crate::backbone::TractEmbedder`]). Fast only on arm64 CPUs with FP16
    /// arithmetic (Cortex-A55, A75, A76: Pi 5); elsewhere tract emulates it, slowly.
    F16,
    /// `f16` where the CPU has FP16 arithmetic (tract-linalg's `has_fp16`), else `f32`.
    Auto,
}

impl std::str::FromStr for Precision {
    type Err = String;
    /// The names of the configuration file (serde's), for the command line.
    fn from_str(s: &str) -> Result<Self, String> {
        from_name(s)
    }
}

impl std::str::FromStr for HeadKind {
    type Err = String;
    /// The names of the configuration file (serde's), for the command line.
    fn from_str(s: &str) -> Result<Self, String> {
        from_name(s)
    }
}

/// A unit variant of a configuration enum from its name in the file.
fn from_name<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    use serde::de::IntoDeserializer;
    T::deserialize(s.trim().into_deserializer()).map_err(|e: serde::de::value::Error| e.to_string())
}

impl Precision {
    /// `f32` or `f16` on this CPU.
    pub fn resolve(self) -> Precision {
        match self {
            Precision::Auto if tract_linalg::has_fp16() => Precision::F16,
            Precision::Auto => Precision::F32,
            p => p,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResizePolicy {
    CenterCrop,
    Stretch,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HeadConfig {
    /// `ncm` (nearest class mean), `softmax` (logistic regression), `combined` or `auto`
    /// (class means until every class has `auto_min_samples`, then `combined`:
    /// the regression with the class means as a prior).
    pub kind: HeadKind,
    pub auto_min_samples: usize,
    /// Softmax regression: L2 penalty (on features centred and scaled to a mean
    /// norm of 1, the mean cross-entropy plus `l2/2 |W|²`) and iteration cap.
    pub l2: f32,
    /// Choose the L2 penalty on the samples by 3-fold cross-validation over
    /// `l2 × {0.1, 1, 10, 100}` when every class has 3 samples (else `l2`).
    pub l2_auto: bool,
    pub max_iterations: usize,
    /// Predict `unknown` when the frame is less similar than this to every class;
    /// `auto` calibrates it on the stored samples, `off` disables it, or a number.
    pub unknown_threshold: String,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            kind: HeadKind::Auto,
            auto_min_samples: 5,
            l2: 1e-3,
            l2_auto: true,
            max_iterations: 300,
            unknown_threshold: "auto".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    Ncm,
    Softmax,
    /// Softmax regression with the class means as a prior (see
    /// [`crate::head::ModelKind::Combined`]).
    Combined,
    Auto,
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
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PredictionConfig {
    /// `every_frame`, or `on_change` (only when the stable label changes).
    pub publish: PublishMode,
    /// Never publish predictions more often than this (0: no limit).
    pub min_interval_ms: u64,
    /// How many scores the `top` list carries.
    pub top_k: usize,
    /// Majority vote over the last N frames before a label counts as stable (1: off).
    pub smoothing_window: usize,
}

impl Default for PredictionConfig {
    fn default() -> Self {
        Self {
            publish: PublishMode::EveryFrame,
            min_interval_ms: 0,
            top_k: 3,
            smoothing_window: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PublishMode {
    EveryFrame,
    OnChange,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MqttConfig {
    /// The broker to connect to; empty starts the embedded broker and connects to it.
    pub host: String,
    pub port: u16,
    /// Empty means `edgehead-<device_id>`.
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub keep_alive_secs: u64,
    /// `auto` (MQTT 5, falling back to 3.1.1 until one of them connects), `5` or
    /// `3.1.1`. The embedded broker is always spoken to in 3.1.1.
    pub protocol: MqttProtocol,
    /// Largest MQTT packet accepted or sent, in bytes; sample images travel in one packet.
    /// With MQTT 5 it is announced to the broker, which then never sends a larger one.
    pub max_packet_size: usize,
    /// Outgoing messages queued towards the broker before new predictions are dropped.
    pub queue: usize,
    /// Topic prefix; topics are `<base_topic>/<device_id>/...`.
    pub base_topic: String,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub predictions: TopicOptions,
    pub status: TopicOptions,
    pub responses: TopicOptions,
    pub tls: TlsConfig,
    pub embedded_broker: EmbeddedBrokerConfig,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 1883,
            client_id: String::new(),
            username: String::new(),
            password: String::new(),
            keep_alive_secs: 30,
            protocol: MqttProtocol::Auto,
            max_packet_size: 16 << 20,
            queue: 64,
            base_topic: "edgehead".into(),
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            predictions: TopicOptions {
                qos: 0,
                retain: false,
            },
            status: TopicOptions {
                qos: 1,
                retain: true,
            },
            responses: TopicOptions {
                qos: 1,
                retain: false,
            },
            tls: TlsConfig::default(),
            embedded_broker: EmbeddedBrokerConfig::default(),
        }
    }
}

/// Which MQTT version to speak to the broker.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum MqttProtocol {
    /// MQTT 5 first; while no connection has succeeded, each failed attempt
    /// switches between 5 and 3.1.1; the first that connects is kept.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "5")]
    V5,
    #[serde(rename = "3.1.1")]
    V311,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TopicOptions {
    pub qos: u8,
    pub retain: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TlsConfig {
    pub enabled: bool,
    /// PEM file of the CA that signed the broker's certificate; empty uses none (an error).
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for brokers that authenticate clients by certificate.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EmbeddedBrokerConfig {
    /// Where the embedded broker listens when `mqtt.host` is empty.
    pub listen: String,
    pub max_connections: usize,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:1883".into(),
            max_connections: 32,
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
    fn one(key: &str, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                key: key.into(),
                message: message.into(),
            }],
        }
    }
}

/// Where the raw configuration comes from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The `--config` file, if any.
    pub file: Option<PathBuf>,
    /// Environment variables to read; `None` reads the process environment.
    pub env: Option<HashMap<String, String>>,
}

/// Merge defaults, the file and the environment into a [`RawConfig`]; unknown
/// keys are errors.
pub fn load(sources: &Sources) -> Result<RawConfig, ConfigError> {
    match load_keeping_unknown(sources)? {
        (raw, unknown) if unknown.is_empty() => Ok(raw),
        (_, problems) => Err(ConfigError { problems }),
    }
}

/// [`load`], with the unknown keys returned beside the configuration (so that
/// [`load_settings`] reports them together with the invalid values).
fn load_keeping_unknown(sources: &Sources) -> Result<(RawConfig, Vec<Problem>), ConfigError> {
    use config::{Config, Environment, File, FileFormat};

    let defaults = Config::try_from(&RawConfig::default())
        .map_err(|e| ConfigError::one("(defaults)", e.to_string()))?;
    let mut builder = Config::builder().add_source(defaults);
    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one("--config", format!("cannot read {}: {e}", path.display()))
        })?;
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }
    let env = Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR)
        .source(sources.env.clone());
    let merged = builder
        .add_source(env)
        .build()
        .map_err(|e| ConfigError::one(&error_key(&e), e.to_string()))?;

    let mut unknown = Vec::new();
    let raw: Result<RawConfig, _> =
        serde_ignored::deserialize(merged, |path| unknown.push(path.to_string()));
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .map(|key| Problem {
            message: format!(
                "unknown key (environment: {ENV_PREFIX}{ENV_SEPARATOR}{})",
                key.to_uppercase().replace('.', ENV_SEPARATOR)
            ),
            key,
        })
        .collect();
    match raw {
        Ok(raw) => Ok((raw, problems)),
        Err(e) => {
            problems.push(Problem {
                key: error_key(&e),
                message: e.to_string(),
            });
            Err(ConfigError { problems })
        }
    }
}

/// The key a `config` error is about, when it names one.
fn error_key(e: &config::ConfigError) -> String {
    let text = e.to_string();
    text.rsplit_once("for key `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(key, _)| key.to_string())
        .unwrap_or_else(|| "(config)".into())
}

/// The configuration after validation: every value checked, defaults resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub raw: RawConfig,
    pub device_id: String,
    pub client_id: String,
    /// `<base_topic>/<device_id>`.
    pub topic_base: String,
    /// Where the embedded broker listens, when it runs.
    pub embedded_broker: Option<SocketAddr>,
    pub unknown_threshold: UnknownThreshold,
    /// The classifiers, resolved: at least one; the first takes the device-level
    /// request topics and a state directory of edgehead 0.1.
    pub classifiers: Vec<std::sync::Arc<crate::classifier::ClassifierSpec>>,
}

/// When a frame counts as far from every class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnknownThreshold {
    Off,
    Auto,
    Fixed(f32),
}

impl Settings {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.raw.shutdown.grace_secs)
    }

    pub fn state_dir(&self) -> &Path {
        &self.raw.state_dir
    }
}

/// Load and validate in one step.
/// Every problem is reported at once: unknown keys and invalid values together.
pub fn load_settings(sources: &Sources) -> Result<Settings, ConfigError> {
    let (raw, unknown) = load_keeping_unknown(sources)?;
    match validate(raw) {
        Ok(s) if unknown.is_empty() => Ok(s),
        Ok(_) => Err(ConfigError { problems: unknown }),
        Err(mut e) => {
            let mut problems = unknown;
            problems.append(&mut e.problems);
            Err(ConfigError { problems })
        }
    }
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn check(&mut self, ok: bool, key: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(Problem {
                key: key.into(),
                message: message(),
            });
        }
    }

    fn range<T: PartialOrd + fmt::Display + Copy>(&mut self, key: &str, v: T, lo: T, hi: T) {
        self.check(v >= lo && v <= hi, key, || {
            format!("{v} is out of range ({lo} to {hi})")
        });
    }

    fn file(&mut self, key: &str, path: &Path) {
        if path.as_os_str().is_empty() {
            self.problems.push(Problem {
                key: key.into(),
                message: "must name a file".into(),
            });
        } else if let Err(e) = std::fs::File::open(path) {
            self.problems.push(Problem {
                key: key.into(),
                message: format!("cannot open {}: {e}", path.display()),
            });
        }
    }
}

/// Characters allowed in a device id, a topic segment and a file name alike.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "edgehead".into()
    } else {
        cleaned
    }
}

/// Check every value of `raw`, collecting all problems.
pub fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
    let mut c = Checker {
        problems: Vec::new(),
    };

    let device_id = if raw.device_id.is_empty() {
        host_name()
    } else {
        raw.device_id.clone()
    };
    c.check(is_safe_name(&device_id), "device_id", || {
        format!("{device_id:?} must be 1 to 64 characters of A-Z, a-z, 0-9, - and _")
    });
    c.check(!raw.state_dir.as_os_str().is_empty(), "state_dir", || {
        "must name a directory".into()
    });
    c.check(
        !raw.log.level.trim().is_empty()
            && tracing_subscriber::EnvFilter::try_new(&raw.log.level).is_ok(),
        "log.level",
        || format!("{:?} is not a tracing filter (try \"info\")", raw.log.level),
    );
    c.range(
        "log.summary_interval_secs",
        raw.log.summary_interval_secs,
        1,
        86_400,
    );

    // Sources: only the one in use must be complete.
    let s = &raw.source;
    match s.kind {
        SourceKind::Camera => {
            c.check(
                !s.camera.device.trim().is_empty(),
                "source.camera.device",
                || "must be an index such as 0 or a path such as /dev/video0".into(),
            );
        }
        SourceKind::Files => {
            c.check(!s.files.path.trim().is_empty(), "source.files.path", || {
                "must name a folder or a glob".into()
            });
        }
        SourceKind::Synthetic => {}
        SourceKind::Http => {
            let u = s.http.url.trim();
            c.check(
                u.starts_with("http://") || u.starts_with("https://"),
                "source.http.url",
                || "must be an http:// or https:// URL".into(),
            );
            if !s.http.ca_file.as_os_str().is_empty() {
                c.file("source.http.ca_file", &s.http.ca_file);
            }
        }
        SourceKind::Command => {
            c.check(
                !s.command.program.trim().is_empty(),
                "source.command.program",
                || "must name the program to start, such as \"rpicam-vid\" or \"ffmpeg\"".into(),
            );
        }
    }
    c.range(
        "source.command.frame_timeout_ms",
        s.command.frame_timeout_ms,
        100,
        3_600_000,
    );
    c.range("source.http.interval_ms", s.http.interval_ms, 10, 3_600_000);
    c.range(
        "source.http.connect_timeout_ms",
        s.http.connect_timeout_ms,
        100,
        600_000,
    );
    c.range(
        "source.http.read_timeout_ms",
        s.http.read_timeout_ms,
        100,
        600_000,
    );
    c.range(
        "source.http.reconnect_min_ms",
        s.http.reconnect_min_ms,
        1,
        600_000,
    );
    c.check(
        s.http.reconnect_max_ms >= s.http.reconnect_min_ms,
        "source.http.reconnect_max_ms",
        || "must not be below source.http.reconnect_min_ms".into(),
    );
    c.range(
        "source.command.restart_min_ms",
        s.command.restart_min_ms,
        1,
        600_000,
    );
    c.check(
        s.command.restart_max_ms >= s.command.restart_min_ms,
        "source.command.restart_max_ms",
        || "must not be below source.command.restart_min_ms".into(),
    );
    c.range("source.camera.width", s.camera.width, 16, 8192);
    c.range("source.camera.height", s.camera.height, 16, 8192);
    c.range("source.camera.fps", s.camera.fps, 1, 240);
    c.range(
        "source.camera.reconnect_min_ms",
        s.camera.reconnect_min_ms,
        1,
        600_000,
    );
    c.check(
        s.camera.reconnect_max_ms >= s.camera.reconnect_min_ms,
        "source.camera.reconnect_max_ms",
        || "must not be below source.camera.reconnect_min_ms".into(),
    );
    c.range("source.files.fps", s.files.fps, 0.001, 1000.0);
    c.range("source.synthetic.width", s.synthetic.width, 16, 8192);
    c.range("source.synthetic.height", s.synthetic.height, 16, 8192);
    c.range("source.synthetic.fps", s.synthetic.fps, 0.0, 1000.0);

    let b = &raw.backbone;
    c.file("backbone.model", &b.model);
    c.range("backbone.input_width", b.input_width, 8, 4096);
    c.range("backbone.input_height", b.input_height, 8, 4096);
    c.check(b.mean.len() == 3, "backbone.mean", || {
        format!("needs 3 values (R, G, B), got {}", b.mean.len())
    });
    c.check(b.std.len() == 3, "backbone.std", || {
        format!("needs 3 values (R, G, B), got {}", b.std.len())
    });
    c.check(
        b.std.iter().all(|v| v.is_finite() && *v != 0.0) && b.mean.iter().all(|v| v.is_finite()),
        "backbone.std",
        || "mean and std must be finite and std non-zero".into(),
    );
    c.check(
        b.crop_fraction > 0.0 && b.crop_fraction <= 1.0,
        "backbone.crop_fraction",
        || format!("{} must be in (0, 1]", b.crop_fraction),
    );
    c.check(!b.output.trim().is_empty(), "backbone.output", || {
        "must name an output or give its index".into()
    });
    if let Threads::Count(n) = b.threads {
        c.range("backbone.threads", n, 1, 64);
    }

    let unknown_threshold = check_head(&mut c, "head", &raw.head);
    let mut classifier_problems = Vec::new();
    let classifiers = crate::classifier::config::resolve(
        &raw,
        &mut classifier_problems,
        unknown_threshold,
        |key, head, out| {
            let mut sub = Checker {
                problems: Vec::new(),
            };
            let t = check_head(&mut sub, key, head);
            out.extend(sub.problems.into_iter().map(|p| (p.key, p.message)));
            t
        },
    );
    c.problems.extend(
        classifier_problems
            .into_iter()
            .map(|(key, message)| Problem { key, message }),
    );

    let l = &raw.learn;
    c.range("learn.debounce_ms", l.debounce_ms, 0, 60_000);
    c.range("learn.max_classes", l.max_classes, 1, 10_000);
    c.range("learn.max_samples", l.max_samples, 1, 1_000_000);
    c.range("learn.max_image_bytes", l.max_image_bytes, 1024, 256 << 20);
    c.range("learn.max_image_side", l.max_image_side, 16, 65_535);
    // A 32-bit board cannot address more than about 3 GiB in one process.
    let max_budget = if cfg!(target_pointer_width = "32") {
        1024
    } else {
        4096
    };
    c.range(
        "learn.decode_budget_mib",
        l.decode_budget_mib,
        1,
        max_budget,
    );
    c.range(
        "learn.idempotency_window_secs",
        l.idempotency_window_secs,
        0,
        86_400,
    );
    c.range("learn.thumbnail_side", l.thumbnail_side, 32, 4096);
    c.range("learn.queue", l.queue, 1, 10_000);

    let p = &raw.predictions;
    c.range(
        "predictions.min_interval_ms",
        p.min_interval_ms,
        0,
        3_600_000,
    );
    c.range("predictions.top_k", p.top_k, 1, 100);
    c.range("predictions.smoothing_window", p.smoothing_window, 1, 100);

    let m = &raw.mqtt;
    let embedded = m.host.trim().is_empty();
    c.check(m.port != 0, "mqtt.port", || "must not be 0".into());
    c.range("mqtt.keep_alive_secs", m.keep_alive_secs, 5, 65_535);
    c.range(
        "mqtt.max_packet_size",
        m.max_packet_size,
        10 << 10,
        256 << 20,
    );
    c.check(
        m.max_packet_size >= l.max_image_bytes + 4096,
        "mqtt.max_packet_size",
        || {
            format!(
                "{} is too small for learn.max_image_bytes ({}) plus headers",
                m.max_packet_size, l.max_image_bytes
            )
        },
    );
    c.range("mqtt.queue", m.queue, 1, 100_000);
    c.range("mqtt.reconnect_min_ms", m.reconnect_min_ms, 1, 600_000);
    c.check(
        m.reconnect_max_ms >= m.reconnect_min_ms,
        "mqtt.reconnect_max_ms",
        || "must not be below mqtt.reconnect_min_ms".into(),
    );
    c.check(valid_topic_prefix(&m.base_topic), "mqtt.base_topic", || {
        format!(
            "{:?} must be a non-empty topic without +, # or empty levels",
            m.base_topic
        )
    });
    for (key, t) in [
        ("mqtt.predictions.qos", m.predictions),
        ("mqtt.status.qos", m.status),
        ("mqtt.responses.qos", m.responses),
    ] {
        c.check(t.qos <= 2, key, || format!("{} must be 0, 1 or 2", t.qos));
    }
    let client_id = if m.client_id.is_empty() {
        format!("edgehead-{device_id}")
    } else {
        m.client_id.clone()
    };
    c.check(
        client_id.len() <= 65_535 && !client_id.contains(['+', '#', '/']),
        "mqtt.client_id",
        || format!("{client_id:?} must not contain +, # or /"),
    );
    c.check(
        m.password.is_empty() || !m.username.is_empty(),
        "mqtt.password",
        || "a password needs mqtt.username".into(),
    );
    if m.tls.enabled {
        c.check(!embedded, "mqtt.tls.enabled", || {
            "TLS needs an external broker (mqtt.host); the embedded broker is plain TCP".into()
        });
        c.file("mqtt.tls.ca_file", &m.tls.ca_file);
        let cert = !m.tls.client_cert.as_os_str().is_empty();
        let key = !m.tls.client_key.as_os_str().is_empty();
        c.check(cert == key, "mqtt.tls.client_key", || {
            "client_cert and client_key go together".into()
        });
        if cert {
            c.file("mqtt.tls.client_cert", &m.tls.client_cert);
        }
        if key {
            c.file("mqtt.tls.client_key", &m.tls.client_key);
        }
    }
    let embedded_broker = if embedded {
        match m.embedded_broker.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                c.problems.push(Problem {
                    key: "mqtt.embedded_broker.listen".into(),
                    message: format!(
                        "{:?} is not an address such as 0.0.0.0:1883: {e}",
                        m.embedded_broker.listen
                    ),
                });
                None
            }
        }
    } else {
        None
    };
    c.range(
        "mqtt.embedded_broker.max_connections",
        m.embedded_broker.max_connections,
        2,
        10_000,
    );
    c.check(
        valid_topic_prefix(&raw.homeassistant.prefix),
        "homeassistant.prefix",
        || format!("{:?} is not a valid topic prefix", raw.homeassistant.prefix),
    );
    let ha = &raw.homeassistant;
    c.check(
        ha.expire_after_secs == 0 || (3..=86_400).contains(&ha.expire_after_secs),
        "homeassistant.expire_after_secs",
        || format!("{} must be 0 (never) or 3 to 86400", ha.expire_after_secs),
    );
    c.check(
        ha.image_interval_secs == 0.0 || (0.5..=86_400.0).contains(&ha.image_interval_secs),
        "homeassistant.image_interval_secs",
        || {
            format!(
                "{} must be 0 (no image) or 0.5 to 86400",
                ha.image_interval_secs
            )
        },
    );
    c.range("homeassistant.image_max_side", ha.image_max_side, 32, 4096);
    c.range("shutdown.grace_secs", raw.shutdown.grace_secs, 0.1, 600.0);

    if !c.problems.is_empty() {
        return Err(ConfigError {
            problems: c.problems,
        });
    }
    let topic_base = format!("{}/{}", m.base_topic.trim_end_matches('/'), device_id);
    Ok(Settings {
        device_id,
        client_id,
        topic_base,
        embedded_broker,
        unknown_threshold,
        classifiers,
        raw,
    })
}

/// Check a `[head]` table (or a classifier's, under `key`); returns its unknown threshold.
fn check_head(c: &mut Checker, key: &str, h: &HeadConfig) -> UnknownThreshold {
    c.range(
        &format!("{key}.auto_min_samples"),
        h.auto_min_samples,
        1,
        10_000,
    );
    c.check(
        h.l2.is_finite() && (0.0..=1000.0).contains(&h.l2),
        &format!("{key}.l2"),
        || format!("{} must be a number from 0 to 1000", h.l2),
    );
    c.range(
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
                c.problems.push(Problem {
                    key: format!("{key}.unknown_threshold"),
                    message: format!(
                        "{other:?} must be \"auto\", \"off\" or a cosine similarity from -1 to 1"
                    ),
                });
                UnknownThreshold::Off
            }
        },
    }
}

fn valid_topic_prefix(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#', '\0']) && t.split('/').all(|level| !level.is_empty())
}

/// The configuration as `print-config` shows it: TOML, with secrets masked.
/// `scheme://user:password@host/...` with the user and password masked; any other
/// text as it is. For URLs shown in logs, status and `print-config`.
pub fn redact_userinfo(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{MASK}@{}", &rest[at + 1..]),
        None => s.to_string(),
    }
}

pub fn to_masked_toml(raw: &RawConfig) -> String {
    let mut shown = raw.clone();
    if !shown.mqtt.password.is_empty() {
        shown.mqtt.password = MASK.into();
    }
    if !shown.source.http.password.is_empty() {
        shown.source.http.password = MASK.into();
    }
    shown.source.http.url = redact_userinfo(&shown.source.http.url);
    for a in &mut shown.source.command.args {
        *a = redact_userinfo(a);
    }
    toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    #[test]
    fn threads_take_a_number_or_auto_from_toml_and_the_environment() {
        let t: BackboneConfig = toml::from_str("threads = 3").expect("toml int");
        assert_eq!(t.threads, Threads::Count(3));
        let t: BackboneConfig = toml::from_str("threads = \"auto\"").expect("auto");
        assert_eq!(t.threads, Threads::Auto);
        assert!(toml::from_str::<BackboneConfig>("threads = -2").is_err());
        assert!(toml::from_str::<BackboneConfig>("threads = \"many\"").is_err());
        let auto = Threads::Auto.resolve();
        assert!((1..=Threads::AUTO_MAX).contains(&auto), "{auto}");
        assert_eq!(Threads::Count(0).resolve(), 1);
        let s = load_settings(&env(&[("EDGEHEAD__BACKBONE__THREADS", "2")])).expect("env threads");
        assert_eq!(s.raw.backbone.threads, Threads::Count(2));
        let s = load_settings(&env(&[
            ("EDGEHEAD__BACKBONE__THREADS", "auto"),
            ("EDGEHEAD__BACKBONE__PRECISION", "f16"),
        ]))
        .expect("env auto");
        assert_eq!(s.raw.backbone.threads, Threads::Auto);
        assert_eq!(s.raw.backbone.precision, Precision::F16);
        let e =
            load_settings(&env(&[("EDGEHEAD__BACKBONE__THREADS", "0")])).expect_err("0 threads");
        assert!(e.to_string().contains("backbone.threads"), "{e}");
    }

    #[test]
    fn precision_auto_is_f32_without_fp16_arithmetic() {
        assert_eq!(BackboneConfig::default().precision, Precision::F32);
        let want = if tract_linalg::has_fp16() {
            Precision::F16
        } else {
            Precision::F32
        };
        assert_eq!(Precision::Auto.resolve(), want);
        assert_eq!(Precision::F16.resolve(), Precision::F16);
        assert_eq!("f16".parse::<Precision>(), Ok(Precision::F16));
        assert!("f8".parse::<Precision>().is_err());
        assert!(toml::from_str::<BackboneConfig>("precision = \"double\"").is_err());
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            redact_userinfo("rtsp://admin:s3cret@cam:554/stream?a=b@c"),
            format!("rtsp://{MASK}@cam:554/stream?a=b@c")
        );
        assert_eq!(redact_userinfo("http://cam/x@y"), "http://cam/x@y");
        assert_eq!(redact_userinfo("-rtsp_transport"), "-rtsp_transport");
        let mut raw = RawConfig::default();
        raw.source.command.args = vec!["-i".into(), "rtsp://u:p4ss@cam/1".into()];
        raw.source.http.url = "http://u:p4ss@cam/stream".into();
        assert!(!to_masked_toml(&raw).contains("p4ss"));
    }

    fn env(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            file: None,
            env: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    fn file(text: &str) -> (tempfile::TempDir, Sources) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edgehead.toml");
        std::fs::write(&path, text).expect("write");
        (
            dir,
            Sources {
                file: Some(path),
                env: Some(HashMap::new()),
            },
        )
    }

    fn keys(e: &ConfigError) -> Vec<&str> {
        e.problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn defaults_load_without_a_file() {
        let raw = load(&env(&[])).expect("defaults load");
        assert_eq!(raw, RawConfig::default());
    }

    #[test]
    fn environment_overrides_file_and_keeps_strings() {
        let (_d, mut s) = file("[mqtt]\nport = 1884\nusername = \"me\"\n");
        s.env = Some(
            [
                ("EDGEHEAD__MQTT__PASSWORD", "007"),
                ("EDGEHEAD__MQTT__PORT", "1885"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let raw = load(&s).expect("load");
        assert_eq!(raw.mqtt.port, 1885);
        assert_eq!(raw.mqtt.password, "007");
        assert_eq!(raw.mqtt.username, "me");
    }

    #[test]
    fn unknown_keys_are_all_reported_with_their_names() {
        let (_d, mut s) = file("colour = 1\n[mqtt]\nprot = 1\n[source.files]\nfsp = 2\n");
        s.env = Some(
            [("EDGEHEAD__MQTT__PASSWROD", "x")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let err = load(&s).expect_err("unknown keys");
        let mut k = keys(&err);
        k.sort();
        assert_eq!(
            k,
            vec!["colour", "mqtt.passwrod", "mqtt.prot", "source.files.fsp"]
        );
        assert!(err.to_string().contains("EDGEHEAD__MQTT__PROT"));
    }

    #[test]
    fn an_l2_penalty_the_cross_validation_grid_would_overflow_is_refused() {
        // l2_auto tries l2 × 100: above 1000 that grid leaves what f32 trains well.
        let err = load_settings(&env(&[("EDGEHEAD__HEAD__L2", "5000")])).expect_err("too large");
        assert_eq!(keys(&err), vec!["head.l2"]);
        load_settings(&env(&[("EDGEHEAD__HEAD__L2", "1000")])).expect("the largest allowed");
    }

    #[test]
    fn a_classifier_s_own_settings_are_checked_under_its_key() {
        let (_d, s) = file(
            "[[classifiers]]\nname = \"door\"\npredictions = { top_k = 0 }\nhead = { l2 = -1.0 }\n",
        );
        let err = load_settings(&s).expect_err("two problems");
        let mut k = keys(&err);
        k.sort();
        assert_eq!(
            k,
            vec!["classifiers[0].head.l2", "classifiers[0].predictions.top_k"]
        );
    }

    #[test]
    fn a_classifier_name_longer_than_a_directory_name_is_refused() {
        // 64 characters, but 256 bytes of UTF-8: run would fail to create its store.
        let name = "𝐀".repeat(64);
        let (_d, s) = file(&format!("[[classifiers]]\nname = \"{name}\"\n"));
        let err = load_settings(&s).expect_err("too long");
        assert_eq!(keys(&err), vec!["classifiers[0].name"]);
    }

    #[test]
    fn unknown_keys_do_not_hide_invalid_values() {
        let (_d, s) = file("[mqtt]\nprot = 1\n[predictions]\ntop_k = 0\n");
        let err = load_settings(&s).expect_err("two problems");
        let mut k = keys(&err);
        k.sort();
        assert_eq!(k, vec!["mqtt.prot", "predictions.top_k"]);
    }

    #[test]
    fn wrong_type_names_the_key() {
        let (_d, s) = file("[mqtt]\nport = \"eighteen\"\n");
        let err = load(&s).expect_err("bad type");
        assert_eq!(keys(&err), vec!["mqtt.port"], "{err}");
    }

    #[test]
    fn invalid_values_are_reported_together() {
        let mut raw = RawConfig::default();
        raw.device_id = "bad/id".into();
        raw.mqtt.predictions.qos = 3;
        raw.backbone.mean = vec![1.0];
        raw.backbone.model = "/nonexistent/model.onnx".into();
        raw.predictions.top_k = 0;
        raw.head.unknown_threshold = "maybe".into();
        let err = validate(raw).expect_err("invalid");
        let k = keys(&err);
        for want in [
            "device_id",
            "mqtt.predictions.qos",
            "backbone.mean",
            "backbone.model",
            "predictions.top_k",
            "head.unknown_threshold",
        ] {
            assert!(k.contains(&want), "{want} missing from {k:?}");
        }
    }

    #[test]
    fn external_host_turns_the_embedded_broker_off() {
        let mut raw = RawConfig::default();
        raw.backbone.model = PathBuf::from("Cargo.toml");
        raw.device_id = "cam1".into();
        let s = validate(raw.clone()).expect("valid");
        assert!(s.embedded_broker.is_some());
        assert_eq!(s.topic_base, "edgehead/cam1");
        assert_eq!(s.client_id, "edgehead-cam1");
        raw.mqtt.host = "broker.lan".into();
        let s = validate(raw).expect("valid");
        assert!(s.embedded_broker.is_none());
    }

    #[test]
    fn topic_prefixes_reject_wildcards_and_empty_levels() {
        assert!(valid_topic_prefix("edgehead"));
        assert!(valid_topic_prefix("home/edgehead"));
        for bad in ["", "a/+/b", "a/#", "a//b", "/a"] {
            assert!(!valid_topic_prefix(bad), "{bad:?}");
        }
    }

    #[test]
    fn print_config_masks_the_password() {
        let mut raw = RawConfig::default();
        raw.mqtt.password = "hunter2".into();
        let text = to_masked_toml(&raw);
        assert!(!text.contains("hunter2"));
        assert!(text.contains(MASK));
        // What print-config prints loads back as a configuration.
        let (_d, s) = file(&text);
        let back = load(&s).expect("printed config loads");
        assert_eq!(back.mqtt.port, raw.mqtt.port);
    }
}
