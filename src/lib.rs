//! edgehead: a camera daemon that learns on the device.
//!
//! Frames from a camera (or a program, an HTTP camera, files, a generator) go
//! through a frozen, quantized image backbone run by tract; small heads, retrained
//! on the device from a few labeled samples sent over MQTT, classify the features
//! of regions of the frame; predictions are published over MQTT and to Home
//! Assistant.
//!
//! # Data flow
//!
//! ```text
//! [thread "capture"] FrameSource ──watch (latest frame wins)──► [task infer] per classifier: region → change gate
//!                                                                      │   due crops ──► Embedder (tract, blocking pool)
//!                                                                      │   per classifier: Head (ArcSwap) → Smoother → Recent
//!                                                                      ▼
//!                    broker ◄──► [task mqtt: owns rumqttc EventLoop, only polls] ◄── Publisher::try_publish(prediction)
//!                                       │ incoming request ──► learn::Router (by classifier)
//!                                       ▼ bounded mpsc + try_send (full → "busy" reply, never block the poll loop)
//!                                [task learn, one per classifier] → ops::parse → apply → Store (fsync) → debounce → train → swap
//! ```
//!
//! # Layers
//!
//! Each module imports only from modules on a lower line (never from its own line
//! or above, except a module's own submodules); `tests/it/layers.rs` checks this
//! table against the `use` lines and `crate::` paths of every file in `src/`.
//!
//! ```text
//! layer 1: names region backoff stats time answer
//! layer 2: config
//! layer 3: backbone imaging mqtt
//! layer 4: head source
//! layer 5: store eval
//! layer 6: classifier homeassistant
//! layer 7: pipeline learn
//! layer 8: web
//! layer 9: app
//! layer 10: bench
//! layer 11: cli
//! ```
//!
//! - [`names`]: label and name rules, reserved words, slugs; [`region`]: the
//!   rectangle of the frame; [`answer`]: the envelope of every answer;
//!   [`backoff`], [`stats`], [`time`].
//! - [`config`]: defaults → TOML → environment, validated into [`config::Settings`].
//! - [`backbone`]: the [`backbone::Embedder`] trait, preprocessing and the tract runner;
//!   [`imaging`]: decoding untrusted images, encoding JPEGs; [`mqtt`]: the event-loop
//!   task, [`mqtt::Publisher`], topics, payloads and the embedded broker.
//! - [`head`]: the heads; training is a pure function. [`source`]: the
//!   [`source::FrameSource`] kinds and the capture thread.
//! - [`store`]: samples, embeddings, heads and recent crops on disk, written
//!   atomically; [`eval`]: k-shot accuracy.
//! - [`classifier`]: the shared handles of a classifier, its change gate and recent
//!   crops; [`homeassistant`]: the bridge (discovery, states, events) as a state
//!   machine.
//! - [`pipeline`]: the inference task; [`learn`]: the typed operations and the
//!   learning task.
//! - [`web`]: the console: HTTP server, login, JSON API, live view, events.
//! - [`app`]: wiring, supervision and ordered shutdown.
//! - [`bench`]: the benchmarks (`bench --teach` runs the daemon in-process).
//! - [`cli`]: the command line.

pub mod answer;
pub mod app;
pub mod backbone;
pub mod backoff;
pub mod bench;
pub mod classifier;
pub mod cli;
pub mod config;
pub mod eval;
pub mod head;
pub mod homeassistant;
pub mod imaging;
pub mod learn;
pub mod mqtt;
pub mod names;
pub mod pipeline;
pub mod region;
pub mod source;
pub mod stats;
pub mod store;
pub mod time;
pub mod web;
