//! The `edgehead` binary: parses the command line, sets up logging, and runs the
//! daemon or one of the tool subcommands. Exit codes: 0 success, 1 failure while
//! running, 2 bad configuration or a start-up problem.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use edgehead::backbone::Embedder;
use edgehead::config::{self, LogFormat, Settings, Sources};

#[derive(Parser)]
#[command(
    name = "edgehead",
    version,
    about = "Camera → frozen backbone → head learned on the device → MQTT"
)]
struct Cli {
    /// TOML configuration file (defaults are built in; EDGEHEAD__SECTION__KEY overrides).
    #[arg(short, long, global = true, env = "EDGEHEAD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
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
    Predict {
        images: Vec<PathBuf>,
        /// The classifier whose saved head classifies (default: the first).
        #[arg(long)]
        classifier: Option<String>,
        /// The images are whole frames: crop them to the classifier's region first.
        #[arg(long)]
        apply_region: bool,
    },
    /// k-shot accuracy of the heads on a folder laid out <split>/<class>/*.jpg.
    Eval {
        dataset: PathBuf,
        #[arg(long, default_value = "train")]
        train_split: String,
        /// Default: `val` if present, else `test`.
        #[arg(long)]
        test_split: Option<String>,
        /// Support samples per class: numbers and `all`.
        #[arg(long, value_delimiter = ',', default_value = "1,5,10,all")]
        shots: Vec<edgehead::eval::Shots>,
        /// Random draws of the support set per k.
        #[arg(long, default_value_t = 5)]
        seeds: u64,
        /// Heads to evaluate: ncm, softmax, combined, auto (the default head) and
        /// logreg (scikit-learn's LogisticRegression defaults, the baseline).
        #[arg(long, value_delimiter = ',', default_value = "auto,ncm,softmax,logreg")]
        heads: Vec<edgehead::eval::EvalHead>,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the embeddings here (for tools/compare_sklearn.py).
        #[arg(long)]
        save_embeddings: Option<PathBuf>,
        /// Region against whole frame: put each image into a tenth of a 640×480
        /// frame made from this background image, and evaluate a classifier on
        /// that region and one on the whole frame, with the same draws.
        #[arg(long)]
        scene: Option<PathBuf>,
        /// Teach-time augmentation: embed these extra views of each support image
        /// as extra samples (flip, crop, jitter).
        #[arg(long, value_delimiter = ',')]
        augment: Vec<edgehead::backbone::augment::Augment>,
    },
    /// Measure load time, per-frame latency, end-to-end throughput, training time, RSS.
    Bench {
        /// Thread counts for tract's matrix products, e.g. 1,2,4 or auto.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        threads: Vec<config::Threads>,
        /// Precisions to time, e.g. f32,f16 (default: `backbone.precision`).
        #[arg(long, value_delimiter = ',')]
        precision: Vec<config::Precision>,
        /// Backbone runs to time.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Seconds of end-to-end pipeline on the synthetic source.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Synthetic frame size.
        #[arg(long, default_value_t = 640)]
        width: u32,
        #[arg(long, default_value_t = 480)]
        height: u32,
        /// Capture rate of the synthetic source, like a camera's.
        #[arg(long, default_value_t = 30.0)]
        fps: f64,
        /// Print the time spent per operator kind of the optimized plan.
        #[arg(long)]
        profile: bool,
        /// Also time N crops in one batched backbone run against N single runs.
        #[arg(long, default_value_t = 0)]
        batch: usize,
        /// Also time teaching: labeled sample over MQTT to the first prediction
        /// that knows its label (runs the daemon in-process on these images).
        #[arg(long)]
        teach: Option<PathBuf>,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Measure the configured frame source alone (read, split, decode; no backbone):
    /// frames per second and CPU per frame; and the decode cost of camera buffers.
    BenchSource {
        /// Seconds to run the source for.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
    },
    /// The change gate's measure on real photos put into a scene's region: static
    /// (noise, light ±30%) against another photo; to choose the change threshold.
    BenchGate {
        /// A labeled folder (<split>/<class>/*.jpg), e.g. ../shared/data/hymenoptera.
        dataset: PathBuf,
        #[arg(long, default_value = "train")]
        split: String,
        /// Most photos to use.
        #[arg(long, default_value_t = 200)]
        limit: usize,
        #[arg(long, default_value = "tests/fixtures/images/pants-2.jpg")]
        background: PathBuf,
        #[arg(long, default_value_t = 8)]
        noise: u8,
        /// The threshold to report false runs and missed changes for.
        #[arg(long, default_value_t = edgehead::classifier::gate::DEFAULT_CHANGE_THRESHOLD)]
        threshold: f32,
    },
    /// Replay a scene (camera noise, falling light, then one region changes)
    /// through the real pipeline with two classifiers; print backbone runs per
    /// minute, CPU per minute and the delay from the change to the new label.
    BenchScene {
        /// Seconds of the static scene before the change.
        #[arg(long, default_value_t = 60.0)]
        static_secs: f64,
        /// Seconds after the change.
        #[arg(long, default_value_t = 10.0)]
        after_secs: f64,
        #[arg(long, default_value_t = 15.0)]
        fps: f64,
        /// Camera noise, ± grey levels per channel.
        #[arg(long, default_value_t = 8)]
        noise: u8,
        /// How far the light falls over the static phase (0.2: to 80%).
        #[arg(long, default_value_t = 0.2)]
        light_drop: f32,
        #[arg(long, default_value_t = 60.0)]
        max_age_secs: f64,
        #[arg(long, default_value_t = 3)]
        smoothing_window: usize,
        /// Run the backbone on every frame (the gate off), for comparison.
        #[arg(long)]
        every_frame: bool,
        /// The background photo, and the door's object before and after.
        #[arg(long, default_value = "tests/fixtures/images/pants-2.jpg")]
        background: PathBuf,
        #[arg(long, default_value = "tests/fixtures/images/hat-1.jpg")]
        before: PathBuf,
        #[arg(long, default_value = "tests/fixtures/images/shoes-1.jpg")]
        after: PathBuf,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

const EXIT_RUNTIME: u8 = 1;
const EXIT_STARTUP: u8 = 2;

fn init_logging(settings: Option<&Settings>) {
    let (format, level) = settings
        .map(|s| (s.raw.log.format, s.raw.log.level.clone()))
        .unwrap_or((LogFormat::Text, "info".into()));
    // The embedded broker (rumqttd) logs routine disconnects as errors: silent unless
    // asked for (log.level = "info,rumqttd=info"). Its failure to run is still caught.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| format!("rumqttd=off,{level}"));
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn settings(cli: &Cli) -> Result<Settings, config::ConfigError> {
    config::load_settings(&Sources {
        file: cli.config.clone(),
        env: None,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.as_ref().unwrap_or(&Command::Run);
    if let Command::PrintConfig = command {
        return match config::load(&Sources {
            file: cli.config.clone(),
            env: None,
        }) {
            Ok(raw) => {
                print!("{}", config::to_masked_toml(&raw));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("edgehead: {e}");
                ExitCode::from(EXIT_STARTUP)
            }
        };
    }
    if let Command::Devices = command {
        return devices();
    }
    let settings = match settings(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgehead: {e}");
            return ExitCode::from(EXIT_STARTUP);
        }
    };
    init_logging(Some(&settings));
    let result = match command {
        Command::Run => return run(settings),
        Command::CheckConfig => check_config(&settings),
        Command::Embed { images } => embed(&settings, images),
        Command::Predict {
            images,
            classifier,
            apply_region,
        } => predict(&settings, images, classifier.as_deref(), *apply_region),
        Command::Eval {
            dataset,
            train_split,
            test_split,
            shots,
            seeds,
            heads,
            json,
            save_embeddings,
            scene,
            augment,
        } => eval(
            &settings,
            edgehead::eval::Options {
                dataset: dataset.clone(),
                train_split: train_split.clone(),
                test_split: test_split.clone(),
                shots: shots.clone(),
                seeds: *seeds,
                heads: heads.clone(),
                l2: settings.raw.head.l2,
                l2_auto: settings.raw.head.l2_auto,
                max_iterations: settings.raw.head.max_iterations,
                save_embeddings: save_embeddings.clone(),
                scene: None,
                augment: augment.clone(),
            },
            json.as_ref(),
            scene.as_ref(),
        ),
        Command::Bench {
            threads,
            precision,
            runs,
            seconds,
            width,
            height,
            fps,
            profile,
            batch,
            teach,
            json,
        } => {
            let o = edgehead::bench::Options {
                backbone: settings.raw.backbone.clone(),
                threads: threads.clone(),
                precisions: if precision.is_empty() {
                    vec![settings.raw.backbone.precision]
                } else {
                    precision.clone()
                },
                runs: (*runs).max(1),
                seconds: seconds.max(0.5),
                width: (*width).clamp(16, 8192),
                height: (*height).clamp(16, 8192),
                fps: fps.clamp(0.0, 1000.0),
                profile: *profile,
                batch: (*batch).min(16),
            };
            bench(&settings, &o, teach.as_ref(), json.as_ref())
        }
        Command::BenchScene {
            static_secs,
            after_secs,
            fps,
            noise,
            light_drop,
            max_age_secs,
            smoothing_window,
            every_frame,
            background,
            before,
            after,
            json,
        } => (|| -> anyhow::Result<()> {
            let o = edgehead::bench_scene::Options {
                background: read_image(background, &settings.raw.learn)?,
                before: read_image(before, &settings.raw.learn)?,
                after: read_image(after, &settings.raw.learn)?,
                fps: fps.clamp(0.1, 1000.0),
                static_secs: static_secs.clamp(1.0, 86_400.0),
                after_secs: after_secs.clamp(1.0, 86_400.0),
                noise: *noise,
                light_drop: light_drop.clamp(0.0, 0.9),
                max_age_secs: max_age_secs.clamp(0.0, 86_400.0),
                smoothing_window: (*smoothing_window).clamp(1, 100),
                every_frame: *every_frame,
            };
            let embedder = std::sync::Arc::new(edgehead::app::load_backbone(&settings)?);
            let report = edgehead::bench_scene::run(embedder, &o).map_err(anyhow::Error::msg)?;
            for c in &report.classifiers {
                println!(
                    "classifier {:5}: backbone runs/min static {:.1}, changing {:.1}; skipped while static {}{}",
                    c.name,
                    c.runs_per_min_static,
                    c.runs_per_min_changing,
                    c.skipped_static,
                    c.change_to_label_ms
                        .map(|ms| format!("; change → new stable label {ms:.0} ms"))
                        .unwrap_or_default()
                );
            }
            println!(
                "process CPU s/min: static {:.2}, changing {:.2} ({} fps, backbone {:.1} ms per crop)",
                report.cpu_s_per_min_static, report.cpu_s_per_min_changing, report.fps, report.backbone_ms
            );
            println!("{}", serde_json::to_string_pretty(&report)?);
            write_json(json.as_ref(), &report)
        })(),
        Command::BenchGate {
            dataset,
            split,
            limit,
            background,
            noise,
            threshold,
        } => (|| -> anyhow::Result<()> {
            let items = edgehead::eval::list_split(dataset, split)?;
            // An even spread over the classes, in file order.
            let step = (items.len() / (*limit).max(1)).max(1);
            let mut objects = Vec::new();
            for it in items.iter().step_by(step).take(*limit) {
                objects.push((read_image(&it.path, &settings.raw.learn)?, it.class.clone()));
            }
            let bg = read_image(background, &settings.raw.learn)?;
            let c = edgehead::bench_scene::calibrate_gate(&bg, &objects, *noise, *threshold);
            println!("{}", serde_json::to_string_pretty(&c)?);
            Ok(())
        })(),
        Command::BenchSource { seconds } => {
            let cost =
                edgehead::bench_source::source_cost(&settings.raw, seconds.clamp(1.0, 3600.0))
                    .map_err(anyhow::Error::msg);
            cost.map(|c| {
                println!(
                    "source {}: {} frames of {} in {:.1} s = {:.1} frames/s; edgehead CPU {:.2} ms per frame (read, split, decode); program CPU {:.2} ms per frame{}",
                    c.source,
                    c.frames,
                    c.frame,
                    c.seconds,
                    c.frames_per_second,
                    c.cpu_ms_per_frame,
                    c.program_cpu_ms_per_frame,
                    c.error.map(|e| format!("; last error: {e}")).unwrap_or_default()
                );
                for d in edgehead::bench_source::decode_costs(30) {
                    println!(
                        "decode one USB camera buffer {}: MJPEG {:.2} ms, YUYV {:.2} ms",
                        d.size, d.mjpeg_ms, d.yuyv_ms
                    );
                }
            })
        }
        Command::PrintConfig | Command::Devices => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgehead: {e:#}");
            ExitCode::from(EXIT_STARTUP)
        }
    }
}

fn run(settings: Settings) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("edgehead")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("edgehead: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let daemon = match edgehead::app::Daemon::build(settings) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot start");
            eprintln!("edgehead: {e:#}");
            return ExitCode::from(EXIT_STARTUP);
        }
    };
    let result = runtime.block_on(daemon.run(shutdown_signal()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgehead: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        eprintln!("edgehead: second signal, exiting now");
        std::process::exit(130);
    });
}

fn check_config(settings: &Settings) -> anyhow::Result<()> {
    let embedder = edgehead::app::load_backbone(settings).context("backbone")?;
    let dir = settings.state_dir();
    std::fs::create_dir_all(dir).with_context(|| format!("state_dir {}", dir.display()))?;
    edgehead::store::write_atomic(&dir.join(".check-config"), b"ok")
        .with_context(|| format!("state_dir {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(dir.join(".check-config"));
    if settings.raw.source.kind == config::SourceKind::Files {
        let n = edgehead::source::files::list(&settings.raw.source.files.path)
            .map_err(|e| anyhow::anyhow!("source.files.path: {e}"))?
            .len();
        println!("source: {n} images at {}", settings.raw.source.files.path);
    }
    println!(
        "backbone: {} ({} features, loaded in {} ms)",
        embedder.id(),
        embedder.dim(),
        embedder.load_time.as_millis()
    );
    println!("state_dir: {} (writable)", dir.display());
    for c in &settings.classifiers {
        println!(
            "classifier {}: region {}, topics under {}/{}",
            c.name,
            serde_json::to_string(&c.region)?,
            settings.topic_base,
            c.name
        );
    }
    println!(
        "mqtt: {} as {}, topics under {}",
        match settings.embedded_broker {
            Some(a) => format!("embedded broker on {a}"),
            None => format!("{}:{}", settings.raw.mqtt.host, settings.raw.mqtt.port),
        },
        settings.client_id,
        settings.topic_base
    );
    println!("configuration OK");
    Ok(())
}

fn devices() -> ExitCode {
    #[cfg(all(feature = "camera", target_os = "linux"))]
    {
        match edgehead::source::camera::list_devices() {
            Ok(list) if list.is_empty() => {
                println!("no video devices found (is the camera plugged in? is this user in group video?)");
                ExitCode::SUCCESS
            }
            Ok(list) => {
                for d in list {
                    println!("{}: {} ({})", d.index, d.name, d.description);
                    match d.formats {
                        Ok(f) => f.iter().for_each(|f| println!("    {f}")),
                        Err(e) => println!("    {e}"),
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("edgehead: cannot list devices: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    }
    #[cfg(not(all(feature = "camera", target_os = "linux")))]
    {
        eprintln!(
            "edgehead: built without camera support (build with --features camera, on Linux)"
        );
        ExitCode::from(EXIT_RUNTIME)
    }
}

fn read_image(path: &PathBuf, learn: &config::LearnConfig) -> anyhow::Result<image::RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let limits = edgehead::source::decode::ImageLimits::from_config(learn);
    edgehead::source::decode::decode_image(&bytes, &limits)
        .with_context(|| path.display().to_string())
}

fn embed(settings: &Settings, images: &[PathBuf]) -> anyhow::Result<()> {
    let embedder = edgehead::app::load_backbone(settings)?;
    for path in images {
        let img = read_image(path, &settings.raw.learn)?;
        let e = embedder.embed(&img)?;
        println!(
            "{}",
            serde_json::json!({
                "image": path.display().to_string(),
                "backbone": embedder.id().to_string(),
                "precision": embedder.precision,
                "threads": embedder.threads,
                "inference_ms": e.inference.as_secs_f64() * 1000.0,
                "features": e.features,
            })
        );
    }
    Ok(())
}

fn bench(
    settings: &Settings,
    o: &edgehead::bench::Options,
    teach: Option<&PathBuf>,
    json: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let report = edgehead::bench::run(o)?;
    let teach = match teach {
        Some(images) => {
            let t = edgehead::bench::teach_latency(settings.raw.clone(), images, 5)?;
            let list = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "teaching over MQTT (debounce {} ms): sample to response {} ms; sample to first prediction with the new class {} ms",
                t.debounce_ms,
                list(&t.response_ms),
                list(&t.first_prediction_ms)
            );
            Some(t)
        }
        None => None,
    };
    write_json(
        json,
        &serde_json::json!({ "bench": report, "teach": teach }),
    )
}

fn write_json(path: Option<&PathBuf>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(p) = path {
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(p, text + "\n").with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

fn eval(
    settings: &Settings,
    mut o: edgehead::eval::Options,
    json: Option<&PathBuf>,
    scene: Option<&PathBuf>,
) -> anyhow::Result<()> {
    if let Some(path) = scene {
        let background = read_image(path, &settings.raw.learn)
            .with_context(|| format!("--scene {}", path.display()))?;
        o.scene = Some(edgehead::eval::Scene::new(&background));
    }
    let embedder = edgehead::app::load_backbone(settings)?;
    let report = edgehead::eval::run(&embedder, &o)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    write_json(json, &report)
}

fn predict(
    settings: &Settings,
    images: &[PathBuf],
    classifier: Option<&str>,
    apply_region: bool,
) -> anyhow::Result<()> {
    let spec = match classifier {
        None => settings.classifiers.first(),
        Some(name) => settings.classifiers.iter().find(|c| c.name == name),
    }
    .ok_or_else(|| {
        anyhow::anyhow!(
            "--classifier: no classifier {:?}; configured: {}",
            classifier.unwrap_or(""),
            settings
                .classifiers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let embedder = edgehead::app::load_backbone(settings)?;
    let mut path = settings
        .state_dir()
        .join(edgehead::classifier::storage::CLASSIFIERS)
        .join(&spec.name)
        .join("head.json");
    // A state directory of edgehead 0.1 the daemon has not migrated yet.
    let old = settings.state_dir().join("head.json");
    if !path.exists()
        && old.exists()
        && settings.classifiers.first().map(|c| &c.name) == Some(&spec.name)
    {
        path = old;
    }
    let bytes =
        std::fs::read(&path).with_context(|| format!("no saved head at {}", path.display()))?;
    let head: edgehead::head::Head =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))?;
    if head.backbone != *embedder.id() {
        anyhow::bail!(
            "the saved head was trained on {}, not {}",
            head.backbone,
            embedder.id()
        );
    }
    for path in images {
        let mut img = read_image(path, &settings.raw.learn)?;
        if apply_region {
            let (w, h) = img.dimensions();
            let rect = spec
                .region
                .rect(w, h)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            img = edgehead::classifier::region::crop(&img, rect);
        }
        let e = embedder.embed(&img)?;
        let s = head.predict(&e.features);
        let top: Vec<_> = s
            .ranked
            .iter()
            .take(settings.raw.predictions.top_k)
            .map(|(c, p)| serde_json::json!({"label": head.classes[*c], "score": p}))
            .collect();
        let label = if s.unknown {
            edgehead::head::UNKNOWN
        } else {
            top.first().and_then(|t| t["label"].as_str()).unwrap_or("")
        };
        println!(
            "{}",
            serde_json::json!({"image": path.display().to_string(), "label": label, "similarity": s.similarity, "top": top})
        );
    }
    Ok(())
}
