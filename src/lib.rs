//! edgehead: a camera daemon that learns on the device.
//!
//! Frames from a camera (or files, or a generator) go through a frozen, quantized
//! image backbone run by tract; a small head, retrained on the device from a few
//! labeled samples sent over MQTT, classifies the features; predictions are published
//! over MQTT.
//!
//! # Layout
//!
//! ```text
//! [thread "capture"] FrameSource ──watch (latest frame wins)──► [task infer] per classifier: region → change gate
//!                                                                      │   due crops ──► Embedder (tract, blocking pool)
//!                                                                      │   per classifier: Head (ArcSwap) → Smoother → Recent
//!                                                                      ▼
//!                    broker ◄──► [task mqtt: owns rumqttc EventLoop, only polls] ◄── Publisher::try_publish(prediction)
//!                                       │ incoming request, routed by classifier
//!                                       ▼ bounded mpsc + try_send (full → "busy" reply, never block the poll loop)
//!                                [task learn, one per classifier] → embed → Store (fsync) → debounce → train head → save → swap
//! ```
//!
//! - [`app`]: wiring, task supervision and ordered shutdown.
//! - [`config`]: defaults → TOML → environment, validated into [`config::Settings`].
//! - [`source`]: the [`source::FrameSource`] trait, camera/files/synthetic sources and the capture thread.
//! - [`backbone`]: the [`backbone::Embedder`] trait, preprocessing and the tract runner.
//! - [`head`]: nearest-class-mean and softmax-regression heads; training is a pure function.
//! - [`store`]: samples, embeddings and the saved head on disk, written atomically.
//! - [`mqtt`]: the event-loop task, topics, payloads and the embedded broker.
//! - [`classifier`]: named classifiers on regions: region, change gate, recent crops, stores.
//! - [`pipeline`]: the inference task; [`learn`]: the learning task.
//! - [`eval`] and [`bench`]: the measurement subcommands.

pub mod app;
pub mod backbone;
pub mod backoff;
pub mod bench;
pub mod bench_scene;
pub mod bench_source;
pub mod classifier;
pub mod config;
pub mod eval;
pub mod head;
pub mod homeassistant;
pub mod learn;
pub mod mqtt;
pub mod pipeline;
pub mod source;
pub mod stats;
pub mod store;
