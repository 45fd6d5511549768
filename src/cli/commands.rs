//! What each subcommand does: the daemon with its signal handling, and the tools
//! (`check-config`, `embed`, `predict`, `eval`, the benchmarks). The work is in
//! the library; these functions read files, call it and print.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::args::{
    BenchArgs, BenchGateArgs, BenchSceneArgs, BenchSourceArgs, EvalArgs, PredictArgs,
    SetPasswordArgs,
};
use super::{EXIT_RUNTIME, EXIT_STARTUP};
use crate::backbone::Embedder;
use crate::config::{self, LearnConfig, Settings, SourceKind, Sources};
use crate::imaging::decode::{decode_image, ImageLimits};
use crate::pipeline::build_prediction;
use crate::region;
use crate::source::Frame;
use crate::store::{head_file, state_dir};

/// `edgehead [run]`: the daemon, until SIGTERM or SIGINT.
pub fn run(settings: Settings) -> ExitCode {
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
    let daemon = match crate::app::Daemon::build(settings) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot start");
            eprintln!("edgehead: {e:#}");
            return ExitCode::from(EXIT_STARTUP);
        }
    };
    match runtime.block_on(daemon.run(shutdown_signal())) {
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

/// `edgehead print-config`: the effective configuration, secrets masked.
/// The classifiers are the effective list: the file's `[[classifiers]]` with the
/// run-time changes saved in the state directory laid over them.
pub fn print_config(sources: &Sources) -> ExitCode {
    match config::load(sources) {
        Ok(mut raw) => {
            let runtime = match state_dir::read_runtime(&raw.state_dir) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("edgehead: {e}");
                    return ExitCode::from(EXIT_STARTUP);
                }
            };
            if runtime != Default::default() {
                let effective = runtime.effective(&raw.classifiers);
                println!(
                    "# [[classifiers]]: the file's, with the changes made at run time ({}) laid over them:",
                    raw.state_dir.join(state_dir::RUNTIME).display()
                );
                for (def, origin) in &effective {
                    println!(
                        "#   {} ({})",
                        def.name,
                        serde_json::json!(origin).as_str().unwrap_or("?")
                    );
                }
                raw.classifiers = effective.into_iter().map(|(d, _)| d).collect();
            }
            print!("{}", config::to_masked_toml(&raw));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edgehead: {e}");
            ExitCode::from(EXIT_STARTUP)
        }
    }
}

/// `edgehead check-config`: load the model, check the state directory and the
/// source, and say where everything goes. A state directory a running daemon
/// holds is a warning on stderr, not an error (exit 0: the configuration is
/// valid, e.g. before `systemctl restart edgehead`).
pub fn check_config(settings: &Settings) -> anyhow::Result<()> {
    crate::learn::ops::disabled_operations(&settings.learn.disabled_operations)
        .map_err(anyhow::Error::msg)?;
    let embedder = crate::app::load_backbone(settings).context("backbone")?;
    let dir = settings.state_dir();
    std::fs::create_dir_all(dir).with_context(|| format!("state_dir {}", dir.display()))?;
    crate::store::fsio::write_atomic(&dir.join(".check-config"), b"ok")
        .with_context(|| format!("state_dir {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(dir.join(".check-config"));
    let in_use = crate::store::fsio::is_locked(dir);
    if in_use {
        eprintln!(
            "edgehead: warning: state_dir {} is in use by a running edgehead: this configuration applies when it restarts, and a second daemon on it would refuse to start",
            dir.display()
        );
    }
    if settings.source.kind == SourceKind::Files {
        let path = &settings.source.files.path;
        let n = crate::source::files::list(path)
            .map_err(|e| anyhow::anyhow!("source.files.path: {e}"))?
            .len();
        println!("source: {n} images at {path}");
    }
    println!(
        "backbone: {} ({} features, loaded in {} ms)",
        embedder.id(),
        embedder.dim(),
        embedder.load_time.as_millis()
    );
    println!(
        "state_dir: {} (writable{})",
        dir.display(),
        if in_use {
            "; in use by a running daemon"
        } else {
            ""
        }
    );
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
            None => format!("{}:{}", settings.mqtt.host, settings.mqtt.port),
        },
        if settings.mqtt.client_id.is_empty() {
            // The daemon appends the installation id (made at its first start).
            let kept = std::fs::read_to_string(dir.join(crate::store::state_dir::INSTALLATION_ID))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| t.len() == 16);
            format!(
                "{}-{}",
                settings.client_id,
                kept.as_deref()
                    .unwrap_or("<installation id, made at the first start>")
            )
        } else {
            settings.client_id.clone()
        },
        settings.topic_base
    );
    println!("configuration OK");
    Ok(())
}

/// `edgehead devices`: the V4L2 capture devices and their formats.
pub fn devices() -> ExitCode {
    #[cfg(all(feature = "camera", target_os = "linux"))]
    {
        match crate::source::camera::list_devices() {
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

/// An image file, decoded within `learn`'s limits.
fn read_image(path: &Path, learn: &LearnConfig) -> anyhow::Result<image::RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode_image(&bytes, &ImageLimits::from_config(learn))
        .with_context(|| path.display().to_string())
}

/// Write `value` as pretty JSON to `path`, when given.
fn write_json(path: Option<&PathBuf>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(p) = path {
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(p, text + "\n").with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// `edgehead embed`: one JSON line of features per image.
pub fn embed(settings: &Settings, images: &[PathBuf]) -> anyhow::Result<()> {
    let embedder = crate::app::load_backbone(settings)?;
    for path in images {
        let img = read_image(path, &settings.learn)?;
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

/// `edgehead predict`: classify images with a classifier's saved head, with its
/// own `top_k`; one JSON line per image (the prediction the daemon would publish,
/// before smoothing).
pub fn predict(settings: &Settings, a: &PredictArgs) -> anyhow::Result<()> {
    let spec = settings
        .classifier(a.classifier.as_deref())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--classifier: no classifier {:?}; configured: {}",
                a.classifier.as_deref().unwrap_or(""),
                settings
                    .classifiers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let first = settings.classifiers.first().map_or("", |c| c.name.as_str());
    let path = state_dir::head_path(settings.state_dir(), &spec.name, first);
    let head = head_file::read(&path)?
        .ok_or_else(|| anyhow::anyhow!("no saved head at {}", path.display()))?;
    let embedder = crate::app::load_backbone(settings)?;
    if head.backbone != *embedder.id() {
        anyhow::bail!(
            "the saved head was trained on {}, not {}",
            head.backbone,
            embedder.id()
        );
    }
    for image in &a.images {
        let mut img = read_image(image, &settings.learn)?;
        if a.apply_region {
            let (w, h) = img.dimensions();
            let rect = spec
                .region
                .rect(w, h)
                .map_err(|e| anyhow::anyhow!("{}: {e}", image.display()))?;
            img = region::crop(&img, rect);
        }
        let e = embedder.embed(&img)?;
        let frame = Frame {
            seq: 0,
            captured_at: std::time::SystemTime::now(),
            captured: std::time::Instant::now(),
            image: image::RgbImage::new(1, 1),
            name: None,
        };
        let p = build_prediction(
            &frame,
            &e.features,
            e.inference,
            Some(&head),
            spec.predictions.top_k,
            &embedder.id().to_string(),
        );
        println!(
            "{}",
            serde_json::json!({
                "image": image.display().to_string(),
                "classifier": spec.name,
                "label": p.label,
                "confidence": p.confidence,
                "similarity": p.similarity,
                "top": p.top,
            })
        );
    }
    Ok(())
}

/// `edgehead eval`.
pub fn eval(settings: &Settings, a: &EvalArgs) -> anyhow::Result<()> {
    let mut o = crate::eval::Options {
        dataset: a.dataset.clone(),
        train_split: a.train_split.clone(),
        test_split: a.test_split.clone(),
        shots: a.shots.clone(),
        seeds: a.seeds,
        heads: a.heads.clone(),
        l2: settings.head.l2,
        l2_auto: settings.head.l2_auto,
        max_iterations: settings.head.max_iterations,
        save_embeddings: a.save_embeddings.clone(),
        scene: None,
        augment: a.augment.clone(),
    };
    if let Some(path) = &a.scene {
        let background = read_image(path, &settings.learn)
            .with_context(|| format!("--scene {}", path.display()))?;
        o.scene = Some(crate::eval::Scene::new(&background));
    }
    let embedder = crate::app::load_backbone(settings)?;
    let report = crate::eval::run(&embedder, &o)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    write_json(a.json.as_ref(), &report)
}

/// `edgehead bench`: the backbone, the pipeline, training; with `--teach`, the
/// daemon in-process taught over MQTT.
pub fn bench(settings: &Settings, sources: &Sources, a: &BenchArgs) -> anyhow::Result<()> {
    let o = crate::bench::Options {
        backbone: settings.backbone.clone(),
        threads: a.threads.clone(),
        precisions: if a.precision.is_empty() {
            vec![settings.backbone.precision]
        } else {
            a.precision.clone()
        },
        runs: a.runs.max(1),
        seconds: a.seconds.max(0.5),
        width: a.width.clamp(16, 8192),
        height: a.height.clamp(16, 8192),
        fps: a.fps.clamp(0.0, 1000.0),
        profile: a.profile,
        batch: a.batch.min(16),
    };
    let report = crate::bench::run(&o)?;
    let teach = match &a.teach {
        Some(images) => {
            let raw = config::load(sources)?;
            let t = crate::bench::teach::teach_latency(raw, images, 5)?;
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
        a.json.as_ref(),
        &serde_json::json!({ "bench": report, "teach": teach }),
    )
}

/// `edgehead bench-scene`.
pub fn bench_scene(settings: &Settings, a: &BenchSceneArgs) -> anyhow::Result<()> {
    let o = crate::bench::scene::Options {
        background: read_image(&a.background, &settings.learn)?,
        before: read_image(&a.before, &settings.learn)?,
        after: read_image(&a.after, &settings.learn)?,
        fps: a.fps.clamp(0.1, 1000.0),
        static_secs: a.static_secs.clamp(1.0, 86_400.0),
        after_secs: a.after_secs.clamp(1.0, 86_400.0),
        noise: a.noise,
        light_drop: a.light_drop.clamp(0.0, 0.9),
        max_age_secs: a.max_age_secs.clamp(0.0, 86_400.0),
        smoothing_window: a.smoothing_window.clamp(1, 100),
        every_frame: a.every_frame,
    };
    let embedder = std::sync::Arc::new(crate::app::load_backbone(settings)?);
    let report = crate::bench::scene::run(embedder, &o).map_err(anyhow::Error::msg)?;
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
    write_json(a.json.as_ref(), &report)
}

/// `edgehead bench-gate`.
pub fn bench_gate(settings: &Settings, a: &BenchGateArgs) -> anyhow::Result<()> {
    let items = crate::eval::list_split(&a.dataset, &a.split)?;
    // An even spread over the classes, in file order.
    let step = (items.len() / a.limit.max(1)).max(1);
    let mut objects = Vec::new();
    for it in items.iter().step_by(step).take(a.limit) {
        objects.push((read_image(&it.path, &settings.learn)?, it.class.clone()));
    }
    let bg = read_image(&a.background, &settings.learn)?;
    let c = crate::bench::scene::calibrate_gate(&bg, &objects, a.noise, a.threshold);
    println!("{}", serde_json::to_string_pretty(&c)?);
    Ok(())
}

/// `edgehead bench-source`.
pub fn bench_source(settings: &Settings, a: &BenchSourceArgs) -> anyhow::Result<()> {
    let c = crate::bench::source::source_cost(
        &settings.source,
        &settings.learn,
        a.seconds.clamp(1.0, 3600.0),
    )
    .map_err(anyhow::Error::msg)?;
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
    for d in crate::bench::source::decode_costs(30) {
        println!(
            "decode one USB camera buffer {}: MJPEG {:.2} ms, YUYV {:.2} ms",
            d.size, d.mjpeg_ms, d.yuyv_ms
        );
    }
    Ok(())
}

/// `edgehead set-password`: ask for the console's new password (twice, not
/// echoed) or read it from standard input, and store its hash in the state
/// directory, owned like the directory (so `sudo` works for the service's user).
pub fn set_password(settings: &Settings, a: &SetPasswordArgs) -> anyhow::Result<()> {
    use crate::web::auth::{self, PASSWORD_FILE};
    use std::os::unix::fs::MetadataExt;
    let dir = settings.state_dir();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let password = if a.stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password("New console password: ")?;
        auth::check_new_password(&first)?;
        let again = rpassword::prompt_password("The same again: ")?;
        anyhow::ensure!(first == again, "the two passwords differ; nothing changed");
        first
    };
    auth::set_password(dir, &password)?;
    let file = dir.join(PASSWORD_FILE);
    let owner = std::fs::metadata(dir)?;
    let me = std::fs::metadata(&file)?;
    if (me.uid(), me.gid()) != (owner.uid(), owner.gid()) {
        std::os::unix::fs::chown(&file, Some(owner.uid()), Some(owner.gid())).with_context(
            || {
                format!(
                    "cannot give {} to the state directory's owner",
                    file.display()
                )
            },
        )?;
    }
    println!(
        "console password set in {}; sessions logged in with the old one have ended",
        file.display()
    );
    Ok(())
}
