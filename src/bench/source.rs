//! `edgehead bench-source`: what a frame source costs on its own (reading,
//! splitting, decoding; no backbone), and what decoding a camera frame costs.
//!
//! The configured source runs on its capture thread as in the daemon; a consumer
//! takes every frame as soon as it is there (so on-demand sources run as fast as
//! they can deliver). CPU time comes from `getrusage(2)`: `RUSAGE_SELF` for
//! edgehead's own threads, `RUSAGE_CHILDREN` for a `command` source's program once
//! it has been stopped and reaped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::{LearnConfig, SourceConfig};
use crate::imaging::decode::{decode_frame, ImageLimits, RawFormat};
use crate::source::{self, Demand, SourceState};
use crate::stats::Stats;

/// One source run.
#[derive(Debug, Clone, Serialize)]
pub struct SourceCost {
    pub source: String,
    pub frames: u64,
    pub seconds: f64,
    pub frames_per_second: f64,
    /// Frame size seen, `WxH`.
    pub frame: String,
    /// edgehead's CPU time per frame (reader, splitter, decoder), milliseconds.
    pub cpu_ms_per_frame: f64,
    /// The started program's CPU time per frame (command source), milliseconds.
    pub program_cpu_ms_per_frame: f64,
    /// The source's last error, if it was not running at the end.
    pub error: Option<String>,
}

/// Decoding one camera buffer, median of the runs, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeCost {
    pub size: String,
    pub mjpeg_ms: f64,
    pub yuyv_ms: f64,
}

use crate::stats::cpu_seconds;

/// Run the configured source for `seconds` and measure it.
pub fn source_cost(
    source: &SourceConfig,
    learn: &LearnConfig,
    seconds: f64,
) -> Result<SourceCost, String> {
    let opener = source::opener(source, learn).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    let (frame_tx, mut frame_rx) = watch::channel(None);
    let (state_tx, state_rx) = watch::channel(SourceState::Starting);
    let demand = Arc::new(Demand::default());
    let stats = Arc::new(Stats::default());
    let capture = source::spawn(
        opener,
        Backoff::from_millis(500, 2000),
        frame_tx,
        state_tx,
        stats,
        demand.clone(),
    )
    .map_err(|e| e.to_string())?;
    let (frames, elapsed, cpu, frame) = runtime.block_on(async {
        // Start counting at the first frame: opening is not a per-frame cost.
        let first = tokio::time::timeout(Duration::from_secs(30), frame_rx.changed()).await;
        if !matches!(first, Ok(Ok(()))) {
            return (0, 0.0, 0.0, String::new());
        }
        let mut last = frame_rx
            .borrow_and_update()
            .as_ref()
            .map(|f| f.seq)
            .unwrap_or(0);
        demand.taken(last);
        let (start, cpu0) = (Instant::now(), cpu_seconds(libc::RUSAGE_SELF));
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
        let mut frames = 0u64;
        let mut size = String::new();
        while let Ok(Ok(())) = tokio::time::timeout_at(deadline, frame_rx.changed()).await {
            if let Some(f) = frame_rx.borrow_and_update().as_ref() {
                frames += f.seq - last;
                last = f.seq;
                size = format!("{}x{}", f.image.width(), f.image.height());
                demand.taken(f.seq);
            }
        }
        (
            frames,
            start.elapsed().as_secs_f64(),
            cpu_seconds(libc::RUSAGE_SELF) - cpu0,
            size,
        )
    });
    let children0 = cpu_seconds(libc::RUSAGE_CHILDREN);
    capture.stop.stop();
    let _ = runtime.block_on(capture.done);
    let program = cpu_seconds(libc::RUSAGE_CHILDREN) - children0;
    let error = match &*state_rx.borrow() {
        SourceState::Reconnecting { error, .. } | SourceState::Failed { error } => {
            Some(error.clone())
        }
        _ => None,
    };
    let per = |s: f64| {
        if frames > 0 {
            s * 1000.0 / frames as f64
        } else {
            0.0
        }
    };
    Ok(SourceCost {
        source: format!("{:?}", source.kind).to_lowercase(),
        frames,
        seconds: elapsed,
        frames_per_second: if elapsed > 0.0 {
            frames as f64 / elapsed
        } else {
            0.0
        },
        frame,
        cpu_ms_per_frame: per(cpu),
        program_cpu_ms_per_frame: per(program),
        error,
    })
}

/// Decode cost of a USB camera's buffers (MJPEG, YUYV) at 640×480 and 1280×720.
pub fn decode_costs(runs: usize) -> Vec<DecodeCost> {
    let limits = ImageLimits::default();
    [(640u32, 480u32), (1280, 720)]
        .into_iter()
        .map(|(w, h)| {
            let img = source::synthetic::pattern(w, h, 7);
            let mut jpeg = Vec::new();
            let _ = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
                .encode_image(&img);
            let yuyv: Vec<u8> = img
                .as_raw()
                .chunks_exact(6)
                .flat_map(|p| {
                    let y = |r: u8, g: u8, b: u8| {
                        (16.0 + 0.257 * r as f32 + 0.504 * g as f32 + 0.098 * b as f32) as u8
                    };
                    [y(p[0], p[1], p[2]), 128, y(p[3], p[4], p[5]), 128]
                })
                .collect();
            let time = |bytes: &[u8], format| {
                let mut ms: Vec<f64> = (0..runs.max(1))
                    .map(|_| {
                        let t = Instant::now();
                        let _ = decode_frame(bytes, w, h, None, format, &limits);
                        t.elapsed().as_secs_f64() * 1000.0
                    })
                    .collect();
                ms.sort_by(f64::total_cmp);
                ms[ms.len() / 2]
            };
            DecodeCost {
                size: format!("{w}x{h}"),
                mjpeg_ms: time(&jpeg, RawFormat::Mjpeg),
                yuyv_ms: time(&yuyv, RawFormat::Yuyv),
            }
        })
        .collect()
}
