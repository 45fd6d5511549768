//! `[backbone]`: the ONNX model, its input and preprocessing, and how tract runs
//! it (threads, float precision, graph transforms).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// tract's kernels for a Pi 5's CPU kind (docs/measurements.md).
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
        super::from_name(s)
    }
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
