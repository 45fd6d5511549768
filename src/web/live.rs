//! The live view: the newest camera frame as JPEG, at most `web.live_fps` a
//! second and `web.live_max_side` pixels on its longest side, encoded once for
//! every viewer and only while someone watches (the pipeline pays nothing
//! otherwise). Served as an MJPEG stream (`multipart/x-mixed-replace`, what an
//! `<img>` shows) and as a single frame.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{watch, Notify};

use super::Web;
use crate::imaging::encode::{self, Fit};
use crate::source::FrameRx;

/// The part boundary of the MJPEG stream.
const BOUNDARY: &str = "edgeheadframe";

/// The encoded newest frame and who watches it.
pub struct Live {
    frames: FrameRx,
    interval: Duration,
    max_side: u32,
    viewers: AtomicUsize,
    bytes_sent: AtomicU64,
    wake: Notify,
    /// The latest JPEG and the sequence number of its frame.
    jpeg_tx: watch::Sender<Option<(u64, Bytes)>>,
}

impl Live {
    pub fn new(frames: FrameRx, fps: f64, max_side: u32) -> Self {
        Self {
            frames,
            interval: Duration::from_secs_f64(1.0 / fps.max(0.1)),
            max_side,
            viewers: AtomicUsize::new(0),
            bytes_sent: AtomicU64::new(0),
            wake: Notify::new(),
            jpeg_tx: watch::channel(None).0,
        }
    }

    /// Open live views now.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// JPEG bytes sent to live views since start.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }
}

/// Counts a viewer while it lives.
struct Viewer(Arc<Web>);

impl Viewer {
    fn new(web: Arc<Web>) -> Self {
        web.live.viewers.fetch_add(1, Ordering::Relaxed);
        web.live.wake.notify_one();
        Self(web)
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.0.live.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Encode the newest frame at the live rate while there are viewers; sleep
/// otherwise. Ends at shutdown.
pub async fn encoder(web: Arc<Web>) {
    let live = &web.live;
    let mut last_seq = 0;
    loop {
        if live.viewers() == 0 {
            tokio::select! {
                _ = live.wake.notified() => {}
                _ = web.stop.cancelled() => return,
            }
            continue;
        }
        let frame = live.frames.borrow().clone();
        if let Some(f) = frame.filter(|f| f.seq != last_seq) {
            last_seq = f.seq;
            let side = live.max_side;
            let encoded = tokio::task::spawn_blocking(move || {
                encode::jpeg(
                    &encode::fit(f.image.clone(), Fit::LongSide(side)),
                    encode::VIEW_QUALITY,
                )
                .map(|j| (f.seq, Bytes::from(j)))
            })
            .await;
            if let Ok(Ok(j)) = encoded {
                live.jpeg_tx.send_replace(Some(j));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(live.interval) => {}
            _ = web.stop.cancelled() => return,
        }
    }
}

/// `GET /api/live.mjpeg`: frames as they are encoded, until the viewer leaves or
/// the daemon stops.
pub async fn mjpeg(State(web): State<Arc<Web>>) -> Response {
    let viewer = Viewer::new(web.clone());
    let rx = web.live.jpeg_tx.subscribe();
    let stream =
        futures_util::stream::unfold((viewer, rx, true), |(viewer, mut rx, first)| async move {
            let web = viewer.0.clone();
            // The current frame at once, then each new one.
            if !first || rx.borrow().is_none() {
                tokio::select! {
                    r = rx.changed() => r.ok()?,
                    _ = web.stop.cancelled() => return None,
                }
            }
            let (_, jpeg) = rx.borrow_and_update().clone()?;
            let mut part = format!(
                "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                jpeg.len()
            )
            .into_bytes();
            part.extend_from_slice(&jpeg);
            part.extend_from_slice(b"\r\n");
            web.live
                .bytes_sent
                .fetch_add(part.len() as u64, Ordering::Relaxed);
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(part)),
                (viewer, rx, false),
            ))
        });
    let mut r = Response::new(Body::from_stream(stream));
    if let Ok(v) = HeaderValue::from_str(&format!("multipart/x-mixed-replace; boundary={BOUNDARY}"))
    {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /api/frame.jpg`: the newest frame, encoded for this request.
pub async fn frame(State(web): State<Arc<Web>>) -> Response {
    let Some(f) = web.live.frames.borrow().clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no frame yet").into_response();
    };
    let side = web.live.max_side;
    let jpeg = tokio::task::spawn_blocking(move || {
        encode::jpeg(
            &encode::fit(f.image.clone(), Fit::LongSide(side)),
            encode::VIEW_QUALITY,
        )
    })
    .await;
    match jpeg {
        Ok(Ok(j)) => super::reply::jpeg_response(j, "no-store"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the frame").into_response(),
    }
}
