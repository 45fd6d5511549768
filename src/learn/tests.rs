//! The learner in-process, on a stand-in backbone and a paused tokio clock: a
//! burst of samples trains once after the debounce, and a repeated transaction
//! gets the first answer until the idempotency window ends.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::ops::{Envelope, Limits, Op};
use super::*;
use crate::backbone::fake::MeanColour;
use crate::config::{ClassifierSpec, RawConfig, TriggerConfig};
use crate::region::RegionConfig;

/// A PNG of one colour.
fn png(rgb: [u8; 3]) -> bytes::Bytes {
    let img = image::RgbImage::from_pixel(8, 8, image::Rgb(rgb));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png");
    out.into()
}

/// A learner on a fresh store with `learn` settings, and its request queue and
/// classifier handles. Its publisher is never connected: answers come back on
/// channels.
fn learner(
    dir: &std::path::Path,
    learn: crate::config::LearnConfig,
) -> (Learner, mpsc::Sender<Request>, Classifier) {
    let mut raw = RawConfig::default();
    raw.backbone.model = "Cargo.toml".into();
    raw.device_id = "unit".into();
    raw.mqtt.host = "127.0.0.1".into();
    let settings = crate::config::validate(raw).expect("settings");
    let stats = Arc::new(Stats::default());
    let (publisher, _connection) =
        crate::mqtt::connect(&settings, None, Box::new(Router::default()), stats.clone())
            .expect("client");
    let (notifier, _) = Notifier::channel();
    let spec = Arc::new(ClassifierSpec::new(
        "door",
        RegionConfig::WHOLE,
        TriggerConfig::default(),
    ));
    let topics = Arc::new(crate::mqtt::ClassifierTopics::new("edgehead/unit", "door"));
    let classifier = Classifier::new(spec, topics);
    let (store, _) = Store::open(dir).expect("store");
    let (tx, rx) = mpsc::channel(16);
    let shared = Shared {
        embedder: Arc::new(MeanColour::new()),
        frames: watch::channel(None).1,
        publisher,
        notifier,
        stats,
        config: learn,
    };
    let l = Learner::new(rx, store, classifier.clone(), shared);
    (l, tx, classifier)
}

/// Send `op` with `transaction` and wait for its answer.
async fn ask(tx: &mpsc::Sender<Request>, op: Op, transaction: Option<Value>) -> Value {
    let (reply_tx, reply_rx) = oneshot::channel();
    let key = format!("{op:?}{transaction:?}");
    let request = Request {
        input: Input::Parsed(Box::new(Envelope {
            op,
            transaction,
            key,
            dup: false,
        })),
        reply: ReplyTo::Channel(reply_tx),
    };
    tx.send(request).await.expect("learner running");
    reply_rx.await.expect("an answer")
}

fn add(label: &str, rgb: [u8; 3]) -> Op {
    ops::sample_op(
        label,
        png(rgb),
        false,
        &Limits {
            max_image_bytes: 1 << 20,
        },
    )
    .expect("valid")
}

fn head_version(c: &Classifier) -> Option<u64> {
    c.head.load().as_ref().map(|h| h.version)
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_samples_trains_once_after_the_debounce() {
    let dir = tempfile::tempdir().expect("tempdir");
    let learn = crate::config::LearnConfig {
        debounce_ms: 300,
        ..Default::default()
    };
    let (l, tx, c) = learner(dir.path(), learn);
    let task = tokio::spawn(l.run());
    for (label, rgb) in [
        ("red", [200, 0, 0]),
        ("blue", [0, 0, 200]),
        ("red", [210, 0, 0]),
    ] {
        let r = ask(&tx, add(label, rgb), None).await;
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["data"]["retrain_in_ms"], 300);
    }
    // The answers came at once; no head while the debounce runs.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(head_version(&c), None, "trained before the debounce ended");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Training runs on the blocking pool: give it a moment of real time.
    for _ in 0..200 {
        if head_version(&c).is_some() {
            break;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(head_version(&c), Some(1), "one retrain for the burst");
    let h = c.head.load_full().expect("head");
    assert_eq!(h.classes, ["red", "blue"]);
    assert_eq!(h.quality.samples, 3);
    drop(tx);
    task.await.expect("learner ends when its queue closes");
}

#[tokio::test(start_paused = true)]
async fn a_repeated_transaction_gets_the_first_answer_until_the_window_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let learn = crate::config::LearnConfig {
        idempotency_window_secs: 60,
        debounce_ms: 0,
        ..Default::default()
    };
    let (l, tx, _c) = learner(dir.path(), learn);
    let task = tokio::spawn(l.run());
    let t = Some(json!("t-1"));
    let first = ask(&tx, add("red", [200, 0, 0]), t.clone()).await;
    assert_eq!(first["status"], "ok", "{first}");
    assert_eq!(first["transaction"], "t-1");
    // Another image under the same transaction and key: the first answer again,
    // nothing stored.
    tokio::time::sleep(Duration::from_secs(59)).await;
    let again = ask(&tx, add("red", [200, 0, 0]), t.clone()).await;
    assert_eq!(again, first);
    let classes = ask(&tx, Op::Classes, None).await;
    assert_eq!(classes["data"]["samples"], 1, "{classes}");
    // After the window the same request is new: the same image is then found
    // in its class and answered as a duplicate, still one sample.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = ask(&tx, add("red", [200, 0, 0]), t).await;
    assert_eq!(later["data"]["duplicate"], true, "{later}");
    assert_eq!(later["data"]["id"], first["data"]["id"]);
    drop(tx);
    task.await.expect("learner ends");
}

#[tokio::test]
async fn refusals_change_nothing_and_answer_in_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l, tx, _c) = learner(dir.path(), Default::default());
    let task = tokio::spawn(l.run());
    let r = ask(&tx, add("red", [200, 0, 0]), None).await;
    assert_eq!(r["status"], "ok");
    for (op, expect) in [
        (
            Op::DeleteClass {
                label: "blue".into(),
            },
            "there is no class \"blue\"",
        ),
        (
            Op::MergeClass {
                from: "Red".into(),
                into: "red".into(),
            },
            "from and to are the same class",
        ),
        (
            Op::MergeClass {
                from: "red".into(),
                into: "green".into(),
            },
            "no class \"green\" to merge into",
        ),
        (
            Op::RemoveSample(ops::SampleRef::Id(99)),
            "there is no sample 99",
        ),
        (Op::RecentImage { id: 5 }, "no recent crop 5"),
    ] {
        let answer = ask(&tx, op, None).await;
        assert_eq!(answer["status"], "error", "{answer}");
        let e = answer["error"].as_str().expect("error");
        assert!(e.contains(expect), "{e:?} does not say {expect:?}");
    }
    let classes = ask(&tx, Op::Classes, None).await;
    assert_eq!(
        classes["data"],
        json!({"classes": [{"label": "red", "samples": 1}], "samples": 1})
    );
    drop(tx);
    task.await.expect("learner ends");
}
