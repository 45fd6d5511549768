//! The command line, as clap parses it: the subcommands and their options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config;

/// `edgehead [--config FILE] [COMMAND]`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "edgehead",
    version,
    about = "Camera → frozen backbone → head learned on the device → MQTT"
)]
pub struct Cli {
    /// TOML configuration file (defaults are built in; EDGEHEAD__SECTION__KEY overrides).
    #[arg(short, long, global = true, env = "EDGEHEAD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate the configuration, load the model and check the state directory.
    CheckConfig,
    /// Print the effective configuration as TOML, secrets masked.
    PrintConfig,
    /// List video devices and the formats they offer.
    Devices,
    /// Print the feature vector of each image, one JSON line per image.
    Embed { images: Vec<PathBuf> },
    /// Classify images with the saved head in the state directory.
    Predict(PredictArgs),
    /// k-shot accuracy of the heads on a folder laid out <split>/<class>/*.jpg.
    Eval(EvalArgs),
    /// Measure load time, per-frame latency, end-to-end throughput, training time, RSS.
    Bench(BenchArgs),
    /// Measure the configured frame source alone (read, split, decode; no backbone):
    /// frames per second and CPU per frame; and the decode cost of camera buffers.
    BenchSource(BenchSourceArgs),
    /// The change gate's measure on real photos put into a scene's region: static
    /// (noise, light ±30%) against another photo; to choose the change threshold.
    BenchGate(BenchGateArgs),
    /// Replay a scene (camera noise, falling light, then one region changes)
    /// through the real pipeline with two classifiers; print backbone runs per
    /// minute, CPU per minute and the delay from the change to the new label.
    BenchScene(BenchSceneArgs),
    /// Write a classifier (definition, samples, embeddings, head) to one
    /// bundle file; works beside a running daemon.
    Export(ExportArgs),
    /// Read a bundle into the state directory (the daemon stopped; a running
    /// daemon imports through the console or MQTT) and retrain at the next start.
    Import(ImportArgs),
    /// Set the console's password (stored hashed in the state directory; the
    /// sessions logged in with the old one end).
    SetPassword(SetPasswordArgs),
}

/// `edgehead export`.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The classifier to export (default: the first).
    #[arg(long)]
    pub classifier: Option<String>,
    /// The bundle file to write (a gzip-compressed tar; see docs/bundles.md).
    pub file: PathBuf,
}

/// `edgehead import`.
#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// The bundle file to read.
    pub file: PathBuf,
    /// Import under this name instead of the bundle's.
    #[arg(long = "as")]
    pub as_name: Option<String>,
    /// A classifier of the same name exists: keep its samples and definition
    /// and add the bundle's (images it has already are skipped).
    #[arg(long, conflicts_with = "replace")]
    pub merge: bool,
    /// A classifier of the same name exists: replace it whole.
    #[arg(long)]
    pub replace: bool,
}

/// `edgehead set-password`.
#[derive(Args, Debug, Clone)]
pub struct SetPasswordArgs {
    /// Read the password from the first line of standard input instead of asking
    /// twice on the terminal (for scripts).
    #[arg(long)]
    pub stdin: bool,
}

/// `edgehead predict`.
#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    pub images: Vec<PathBuf>,
    /// The classifier whose saved head classifies (default: the first).
    #[arg(long)]
    pub classifier: Option<String>,
    /// The images are whole frames: crop them to the classifier's region first.
    #[arg(long)]
    pub apply_region: bool,
}

/// `edgehead eval`.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    pub dataset: PathBuf,
    #[arg(long, default_value = "train")]
    pub train_split: String,
    /// Default: `val` if present, else `test`.
    #[arg(long)]
    pub test_split: Option<String>,
    /// Support samples per class: numbers and `all`.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10,all")]
    pub shots: Vec<crate::eval::Shots>,
    /// Random draws of the support set per k.
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Heads to evaluate: ncm, softmax, combined, auto (the default head) and
    /// logreg (scikit-learn's LogisticRegression defaults, the baseline).
    #[arg(long, value_delimiter = ',', default_value = "auto,ncm,softmax,logreg")]
    pub heads: Vec<crate::eval::EvalHead>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the embeddings here (for tools/compare_sklearn.py).
    #[arg(long)]
    pub save_embeddings: Option<PathBuf>,
    /// Region against whole frame: put each image into a tenth of a 640×480
    /// frame made from this background image, and evaluate a classifier on
    /// that region and one on the whole frame, with the same draws.
    #[arg(long)]
    pub scene: Option<PathBuf>,
    /// Teach-time augmentation: embed these extra views of each support image
    /// as extra samples (flip, crop, jitter).
    #[arg(long, value_delimiter = ',')]
    pub augment: Vec<crate::backbone::augment::Augment>,
}

/// `edgehead bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Thread counts for tract's matrix products, e.g. 1,2,4 or auto.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<config::Threads>,
    /// Precisions to time, e.g. f32,f16 (default: `backbone.precision`).
    #[arg(long, value_delimiter = ',')]
    pub precision: Vec<config::Precision>,
    /// Backbone runs to time.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Seconds of end-to-end pipeline on the synthetic source.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Synthetic frame size.
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    /// Capture rate of the synthetic source, like a camera's.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Print the time spent per operator kind of the optimized plan.
    #[arg(long)]
    pub profile: bool,
    /// Also time N crops in one batched backbone run against N single runs.
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
    /// Also time teaching: labeled sample over MQTT to the first prediction
    /// that knows its label (runs the daemon in-process on these images).
    #[arg(long)]
    pub teach: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `edgehead bench-source`.
#[derive(Args, Debug, Clone)]
pub struct BenchSourceArgs {
    /// Seconds to run the source for.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
}

/// `edgehead bench-gate`.
#[derive(Args, Debug, Clone)]
pub struct BenchGateArgs {
    /// A labeled folder (<split>/<class>/*.jpg), e.g. ../shared/data/hymenoptera.
    pub dataset: PathBuf,
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Most photos to use.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
    #[arg(long, default_value = "tests/fixtures/images/pants-2.jpg")]
    pub background: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub noise: u8,
    /// The threshold to report false runs and missed changes for.
    #[arg(long, default_value_t = crate::config::DEFAULT_CHANGE_THRESHOLD)]
    pub threshold: f32,
}

/// `edgehead bench-scene`.
#[derive(Args, Debug, Clone)]
pub struct BenchSceneArgs {
    /// Seconds of the static scene before the change.
    #[arg(long, default_value_t = 60.0)]
    pub static_secs: f64,
    /// Seconds after the change.
    #[arg(long, default_value_t = 10.0)]
    pub after_secs: f64,
    #[arg(long, default_value_t = 15.0)]
    pub fps: f64,
    /// Camera noise, ± grey levels per channel.
    #[arg(long, default_value_t = 8)]
    pub noise: u8,
    /// How far the light falls over the static phase (0.2: to 80%).
    #[arg(long, default_value_t = 0.2)]
    pub light_drop: f32,
    #[arg(long, default_value_t = 60.0)]
    pub max_age_secs: f64,
    #[arg(long, default_value_t = 3)]
    pub smoothing_window: usize,
    /// Run the backbone on every frame (the gate off), for comparison.
    #[arg(long)]
    pub every_frame: bool,
    /// The background photo, and the door's object before and after.
    #[arg(long, default_value = "tests/fixtures/images/pants-2.jpg")]
    pub background: PathBuf,
    #[arg(long, default_value = "tests/fixtures/images/hat-1.jpg")]
    pub before: PathBuf,
    #[arg(long, default_value = "tests/fixtures/images/shoes-1.jpg")]
    pub after: PathBuf,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}
