//! Tests of the capture loop: pacing, reconnecting, bad frames, stopping.

use super::*;
use std::sync::atomic::AtomicUsize;

struct Flaky {
    left: usize,
}

impl FrameSource for Flaky {
    fn next_frame(&mut self) -> Result<Option<Shot>, CaptureError> {
        if self.left == 0 {
            return Err(CaptureError::Transient("unplugged".into()));
        }
        self.left -= 1;
        Ok(Some(RgbImage::new(4, 4).into()))
    }
    fn fps(&self) -> Option<f64> {
        None
    }
}

#[tokio::test]
async fn a_failing_source_is_reopened_and_frames_keep_counting() {
    let opens = Arc::new(AtomicUsize::new(0));
    let o = opens.clone();
    let opener: Opener = Box::new(move || {
        let n = o.fetch_add(1, Ordering::SeqCst);
        if n == 1 {
            // The second attempt finds no device at all.
            return Err(CaptureError::Transient("no device".into()));
        }
        Ok(Box::new(Flaky { left: 3 }) as _)
    });
    let (frame_tx, mut frame_rx) = watch::channel(None);
    let (state_tx, state_rx) = watch::channel(SourceState::Starting);
    let stats = Arc::new(Stats::default());
    let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));
    let cap = spawn(
        opener,
        backoff,
        frame_tx,
        state_tx,
        stats.clone(),
        Arc::default(),
    )
    .expect("spawn");
    // Wait until frames from the third opening arrive (seq 7..9).
    loop {
        frame_rx.changed().await.expect("frames");
        let seq = frame_rx.borrow().as_ref().map(|f| f.seq).unwrap_or(0);
        if seq >= 7 {
            break;
        }
    }
    cap.stop.stop();
    cap.done.await.expect("thread").expect("clean stop");
    assert!(opens.load(Ordering::SeqCst) >= 3);
    assert_eq!(*state_rx.borrow(), SourceState::Stopped);
    assert!(stats.frames_captured.load(Ordering::Relaxed) >= 7);
}

#[test]
fn a_few_bad_frames_are_skipped_and_a_run_of_them_is_a_failure() {
    let bad = || Err(crate::imaging::decode::DecodeError::UnknownFormat);
    let good = || Ok(RgbImage::new(2, 2));
    let mut b = BadFrames::new(3);
    assert!(matches!(b.check("cam", bad()), Ok(None)));
    assert!(matches!(b.check("cam", bad()), Ok(None)));
    assert!(matches!(b.check("cam", good()), Ok(Some(_))));
    assert!(matches!(b.check("cam", bad()), Ok(None)));
    assert!(matches!(b.check("cam", bad()), Ok(None)));
    match b.check("cam", bad()) {
        Err(CaptureError::Transient(e)) => assert!(e.starts_with("cam: 3 frames"), "{e}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut once = BadFrames::new(1);
    assert!(once.check("snap", bad()).is_err());
}

/// Counts the frames it makes; `fps = 0`: as fast as they are taken.
struct OnDemand {
    made: Arc<AtomicUsize>,
}

impl FrameSource for OnDemand {
    fn next_frame(&mut self) -> Result<Option<Shot>, CaptureError> {
        self.made.fetch_add(1, Ordering::SeqCst);
        Ok(Some(RgbImage::new(2, 2).into()))
    }
    fn fps(&self) -> Option<f64> {
        Some(0.0)
    }
}

#[tokio::test]
async fn a_source_at_fps_0_makes_a_frame_only_when_the_last_was_taken() {
    let made = Arc::new(AtomicUsize::new(0));
    let m = made.clone();
    let opener: Opener = Box::new(move || Ok(Box::new(OnDemand { made: m.clone() }) as _));
    let (frame_tx, mut frame_rx) = watch::channel(None);
    let (state_tx, _state_rx) = watch::channel(SourceState::Starting);
    let demand = Arc::new(Demand::default());
    let stats = Arc::new(Stats::default());
    let cap = spawn(
        opener,
        Backoff::from_millis(1, 1),
        frame_tx,
        state_tx,
        stats.clone(),
        demand.clone(),
    )
    .expect("spawn");
    // A slow consumer: five frames, 30 ms apart.
    for _ in 0..5 {
        frame_rx.changed().await.expect("frame");
        let seq = frame_rx
            .borrow_and_update()
            .as_ref()
            .map(|f| f.seq)
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(30)).await;
        demand.taken(seq);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    cap.stop.stop();
    cap.done.await.expect("thread").expect("clean stop");
    // Without demand pacing the loop makes thousands of frames in 150 ms.
    let n = made.load(Ordering::SeqCst);
    assert!((5..=6).contains(&n), "{n} frames made for 5 taken");
}

#[tokio::test]
async fn a_fatal_open_error_ends_capture_with_that_error() {
    let opener: Opener = Box::new(|| Err(CaptureError::Fatal("no images".into())));
    let (frame_tx, mut frame_rx) = watch::channel(None);
    let (state_tx, state_rx) = watch::channel(SourceState::Starting);
    let cap = spawn(
        opener,
        Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
        frame_tx,
        state_tx,
        Arc::new(Stats::default()),
        Arc::default(),
    )
    .expect("spawn");
    let err = cap.done.await.expect("thread").expect_err("fatal");
    assert_eq!(err.to_string(), "no images");
    assert!(matches!(*state_rx.borrow(), SourceState::Failed { .. }));
    // The frame channel is closed: inference sees the end.
    assert!(frame_rx.changed().await.is_err());
}
