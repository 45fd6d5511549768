//! MQTT: the one task that owns rumqttc's event loop, and the [`Publisher`] handle
//! everything else uses to send.
//!
//! The event loop task only polls: it never awaits anything but `poll()` and its
//! own backoff. After every CONNACK it re-subscribes and re-announces (`online`,
//! Home Assistant discovery, and every retained message the daemon keeps: status,
//! head), since a broker without persistence forgets retained messages when it
//! restarts. Requests are handed to the learning task with `try_send`, and a full
//! queue is answered `busy` at once. A request delivered with the retain flag is
//! never carried out: it is a stale copy the broker keeps, and would otherwise run
//! again at every reconnect.
//!
//! Reconnecting backs off exponentially, and the backoff starts again from its
//! minimum only after a connection has stayed up for [`STABLE_AFTER`]: a broker
//! that drops the connection at once (a retained message above
//! `mqtt.max_packet_size` on a request topic, with MQTT 3.1.1) is retried slowly,
//! not three times a second. With MQTT 5 ([`client`]) neither happens: the broker
//! knows the largest packet the daemon takes and sends no retained requests.

pub mod broker;
pub mod client;
pub mod payload;
pub mod topics;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{MqttProtocol, Settings, TopicOptions};
use crate::stats::Stats;
use client::{Client, EventLoop, Net, Params, Protocol};
pub use topics::Topics;

/// How long a connection must stay up before the reconnect backoff starts again
/// from `mqtt.reconnect_min_ms`.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// A request received on `<base>/[<classifier>/]request/<op>[/<arg>]`.
#[derive(Debug, Clone)]
pub struct Request {
    /// The classifier it addresses (index in the configuration).
    pub classifier: usize,
    /// Where the answer goes: `<reply>/<op>`.
    pub reply: String,
    pub op: String,
    /// Topic levels after the operation (`add_sample/<label>`).
    pub arg: Option<String>,
    pub payload: Bytes,
    pub received: Instant,
    /// The broker's DUP flag: a QoS 1 redelivery of a message that may have been
    /// received before.
    pub dup: bool,
}

impl Request {
    /// The caller's `transaction` field, when the payload is a JSON object with one.
    pub fn transaction(&self) -> Option<Value> {
        if self.payload.first() != Some(&b'{') {
            return None;
        }
        serde_json::from_slice::<Value>(&self.payload)
            .ok()?
            .get("transaction")
            .cloned()
    }
}

/// Sends messages without ever waiting: a full queue drops the message and counts it.
#[derive(Clone)]
pub struct Publisher {
    /// Replaced when the connection task switches protocol version.
    client: Arc<ArcSwap<Client>>,
    pub topics: Arc<Topics>,
    /// Every classifier's topics, in configuration order.
    pub classifiers: Arc<Vec<Arc<crate::classifier::ClassifierTopics>>>,
    stats: Arc<Stats>,
    connected: Arc<AtomicBool>,
    predictions: TopicOptions,
    status: TopicOptions,
    responses: TopicOptions,
    /// The last payload of every retained topic the daemon publishes, published
    /// again after each connect.
    retained: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl Publisher {
    /// Whether the client is connected to the broker now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn try_send(&self, topic: &str, options: TopicOptions, payload: Vec<u8>) -> bool {
        if options.retain {
            if let Ok(mut kept) = self.retained.lock() {
                kept.insert(topic.to_string(), payload.clone());
            }
        }
        self.client
            .load()
            .try_publish(topic, options.qos, options.retain, payload)
    }

    /// Record whether the state directory's disk is full (shown in `status`).
    pub fn set_disk_full(&self, full: bool) {
        self.stats.disk_full.store(full, Ordering::Relaxed);
    }

    /// Count a request that was refused.
    pub fn stats_request_failed(&self) {
        self.stats.requests_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Publish one prediction; while disconnected, or when the queue is full, the
    /// prediction is dropped (a stale prediction is worth nothing) and counted.
    pub fn try_publish_prediction(&self, classifier: usize, payload: Vec<u8>) -> bool {
        let sent = self.is_connected()
            && self
                .classifiers
                .get(classifier)
                .is_some_and(|t| self.try_send(&t.prediction, self.predictions, payload));
        let counter = if sent {
            &self.stats.predictions_published
        } else {
            &self.stats.predictions_dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
        sent
    }

    pub fn try_publish_status(&self, payload: &Value) -> bool {
        self.try_send(
            &self.topics.status,
            self.status,
            payload.to_string().into_bytes(),
        )
    }

    /// Publish classifier `classifier`'s retained head description.
    pub fn try_publish_head(&self, classifier: usize, payload: &Value) -> bool {
        let Some(t) = self.classifiers.get(classifier) else {
            return false;
        };
        self.try_send(&t.head, self.status, payload.to_string().into_bytes())
    }

    /// Answer a request on `<reply>/<op>` (see [`Request::reply`]).
    pub fn try_respond(&self, reply: &str, op: &str, payload: &Value) -> bool {
        let sent = self.try_send(
            &format!("{reply}/{op}"),
            self.responses,
            payload.to_string().into_bytes(),
        );
        if !sent {
            tracing::warn!(op, "response dropped: MQTT queue full");
        }
        sent
    }
}

/// Messages to (re)publish after every connect, such as Home Assistant discovery.
pub type Announcements = Vec<(String, Value)>;

/// The connection task: owns the event loop.
pub struct Connection {
    eventloop: EventLoop,
    params: Params,
    protocol: Protocol,
    /// `auto`, and no connection has succeeded yet: failures switch versions.
    probing: bool,
    publisher: Publisher,
    /// The learning task of each classifier, in configuration order.
    requests_tx: Option<Vec<mpsc::Sender<Request>>>,
    /// Classifier names, in configuration order.
    names: Vec<String>,
    backoff: Backoff,
    announcements: Announcements,
    /// When the current connection was acknowledged.
    connected_at: Option<Instant>,
    /// Retained messages to publish again since the last connect (see `on_connect`).
    backlog: std::collections::VecDeque<(String, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("TLS set-up failed: {0}")]
    Tls(String),
}

/// Build the client, its publisher handle and the connection task.
pub fn connect(
    settings: &Settings,
    broker: Option<std::net::SocketAddr>,
    requests_tx: Vec<mpsc::Sender<Request>>,
    stats: Arc<Stats>,
) -> Result<(Publisher, Connection), MqttError> {
    let m = &settings.raw.mqtt;
    let topics = Arc::new(Topics::new(&settings.topic_base));
    let classifiers: Vec<Arc<crate::classifier::ClassifierTopics>> = settings
        .classifiers
        .iter()
        .map(|c| {
            Arc::new(crate::classifier::ClassifierTopics::new(
                &settings.topic_base,
                &c.name,
            ))
        })
        .collect();
    let (host, port) = match broker {
        Some(addr) => (addr.ip().to_string(), addr.port()),
        None => (m.host.clone(), m.port),
    };
    let params = Params {
        client_id: settings.client_id.clone(),
        host,
        port,
        keep_alive: Duration::from_secs(m.keep_alive_secs),
        max_packet_size: m.max_packet_size,
        queue: m.queue,
        credentials: (!m.username.is_empty()).then(|| (m.username.clone(), m.password.clone())),
        tls: if m.tls.enabled {
            Some(tls_config(&m.tls)?)
        } else {
            None
        },
        will: (topics.availability.clone(), topics::OFFLINE),
    };
    // The embedded broker (rumqttd) is served on its 3.1.1 listener.
    let protocol = match (broker, m.protocol) {
        (Some(_), _) | (None, MqttProtocol::V311) => Protocol::V311,
        (None, MqttProtocol::V5 | MqttProtocol::Auto) => Protocol::V5,
    };
    let probing = broker.is_none() && m.protocol == MqttProtocol::Auto;
    let (client, eventloop) = client::build(&params, protocol)?;
    let publisher = Publisher {
        client: Arc::new(ArcSwap::from_pointee(client)),
        topics: topics.clone(),
        classifiers: Arc::new(classifiers.clone()),
        stats,
        connected: Arc::new(AtomicBool::new(false)),
        predictions: m.predictions,
        status: m.status,
        responses: m.responses,
        retained: Arc::new(Mutex::new(BTreeMap::new())),
    };
    let announcements = if settings.raw.homeassistant.discovery {
        payload::homeassistant_discovery(
            &settings.raw.homeassistant.prefix,
            &settings.device_id,
            &topics,
            &classifiers,
        )
    } else {
        Vec::new()
    };
    Ok((
        publisher.clone(),
        Connection {
            eventloop,
            params,
            protocol,
            probing,
            publisher,
            requests_tx: Some(requests_tx),
            names: settings
                .classifiers
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            backoff: Backoff::from_millis(m.reconnect_min_ms, m.reconnect_max_ms),
            announcements,
            connected_at: None,
            backlog: std::collections::VecDeque::new(),
        },
    ))
}

fn tls_config(c: &crate::config::TlsConfig) -> Result<rumqttc::TlsConfiguration, MqttError> {
    // rumqttc builds its rustls config with the process-wide crypto provider: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| MqttError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let ca = read(&c.ca_file)?;
    let client_auth = if c.client_cert.as_os_str().is_empty() {
        None
    } else {
        Some((read(&c.client_cert)?, read(&c.client_key)?))
    };
    Ok(rumqttc::TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth,
    })
}

impl Connection {
    fn on_connect(&mut self) {
        let p = &self.publisher;
        p.connected.store(true, Ordering::Relaxed);
        p.stats.mqtt_connects.fetch_add(1, Ordering::Relaxed);
        self.connected_at = Some(Instant::now());
        if self.probing {
            self.probing = false;
            tracing::info!(
                protocol = self.protocol.name(),
                "the broker speaks MQTT {}; keeping it",
                self.protocol.name()
            );
        }
        let client = p.client.load();
        let mut ok = client.try_subscribe_requests(&p.topics.request_filter);
        ok &= client.try_subscribe_requests(&p.topics.classifier_request_filter);
        if !ok {
            tracing::warn!("MQTT queue full right after connecting; a subscription was dropped");
        }
        // Everything retained goes out again, through a backlog: with many
        // classifiers it can be more than the outgoing queue holds at once.
        self.backlog.clear();
        self.backlog
            .push_back((p.topics.availability.clone(), topics::ONLINE.into()));
        for (topic, config) in &self.announcements {
            self.backlog
                .push_back((topic.clone(), config.to_string().into_bytes()));
        }
        let kept: Vec<(String, Vec<u8>)> = p
            .retained
            .lock()
            .map(|k| k.iter().map(|(t, v)| (t.clone(), v.clone())).collect())
            .unwrap_or_default();
        self.backlog.extend(kept);
        tracing::info!(topics = %p.topics.base, protocol = self.protocol.name(), "MQTT connected");
        self.flush_backlog();
    }

    /// Publish the retained messages still owed since the last connect, as many as
    /// the outgoing queue takes now; the rest after the next event.
    fn flush_backlog(&mut self) {
        let client = self.publisher.client.load();
        while let Some((topic, payload)) = self.backlog.pop_front() {
            if !client.try_publish(&topic, 1, true, payload.clone()) {
                self.backlog.push_front((topic, payload));
                break;
            }
        }
    }

    fn on_publish(&self, topic: &str, payload: Bytes, retain: bool, dup: bool) {
        let Some((route, op, arg)) = self.publisher.topics.parse_request(topic) else {
            return;
        };
        let reply = self.publisher.topics.reply_base(route);
        if payload.is_empty() {
            // What clearing a retained message looks like to subscribers; no
            // operation takes a zero-byte payload.
            tracing::debug!(
                topic,
                "ignored an empty request (a retained message being cleared)"
            );
            return;
        }
        let classifier = match route {
            topics::Route::Device => Some(0),
            topics::Route::Classifier(name) => self.names.iter().position(|n| n == name),
        };
        let request = Request {
            classifier: classifier.unwrap_or(0),
            reply,
            op: op.to_string(),
            arg: arg.map(str::to_string),
            payload,
            received: Instant::now(),
            dup,
        };
        self.publisher
            .stats
            .requests
            .fetch_add(1, Ordering::Relaxed);
        let refused: Option<String> = match (&self.requests_tx, route) {
            (_, topics::Route::Classifier(name)) if classifier.is_none() => Some(format!(
                "there is no classifier \"{name}\"; configured: {}",
                self.names.join(", ")
            )),
            _ if retain => {
                tracing::warn!(topic, "refused a retained request: clear it with an empty retained message on that topic");
                Some("refused: this request was delivered with the retain flag (a copy the broker keeps), so it is not carried out; requests must be published without retain. Clear it by publishing an empty retained message to the same topic".into())
            }
            (None, _) => Some("shutting down".into()),
            (Some(txs), _) => {
                // Err(true): the queue is full; Err(false): the learner is gone.
                let sent = txs.get(request.classifier).map(|tx| {
                    tx.try_send(request.clone())
                        .map_err(|e| matches!(e, mpsc::error::TrySendError::Full(_)))
                });
                match sent {
                    Some(Ok(())) => None,
                    Some(Err(true)) => {
                        Some("busy: too many requests waiting, try again shortly".into())
                    }
                    Some(Err(false)) | None => Some("shutting down".into()),
                }
            }
        };
        if let Some(why) = refused {
            self.publisher
                .stats
                .requests_failed
                .fetch_add(1, Ordering::Relaxed);
            self.publisher.try_respond(
                &request.reply,
                &request.op,
                &payload::response_error(&why, request.transaction().as_ref()),
            );
        }
    }

    /// Poll until `finish` is cancelled; stop handing out requests once `drain` is.
    /// Then publish `offline`, disconnect and return.
    pub async fn run(mut self, drain: CancellationToken, finish: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = finish.cancelled() => break,
                _ = drain.cancelled(), if self.requests_tx.is_some() => {
                    // Dropping the sender lets the learning task finish and end.
                    self.requests_tx = None;
                }
                event = self.eventloop.poll() => match event {
                    Ok(Net::ConnAck) => self.on_connect(),
                    Ok(Net::Publish { topic, payload, retain, dup }) => {
                        self.on_publish(&topic, payload, retain, dup);
                        self.flush_backlog();
                    }
                    Ok(_) => self.flush_backlog(),
                    Err(error) => {
                        let was = self.publisher.connected.swap(false, Ordering::Relaxed);
                        // Only a connection that lasted starts the backoff over.
                        if self.connected_at.take().is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
                            self.backoff.reset();
                        }
                        let delay = self.backoff.next_delay();
                        let protocol = self.protocol.name();
                        if was {
                            tracing::warn!(%error, protocol, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost");
                        } else {
                            tracing::warn!(%error, protocol, retry_in_ms = delay.as_millis() as u64, "MQTT connect failed");
                        }
                        if self.probing {
                            self.switch_protocol();
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = finish.cancelled() => break,
                        }
                    }
                }
            }
        }
        self.goodbye().await;
    }

    /// `mqtt.protocol = "auto"` before the first connection: try the other version
    /// next (a broker without MQTT 5 refuses or drops a version-5 CONNECT).
    fn switch_protocol(&mut self) {
        let next = self.protocol.other();
        match client::build(&self.params, next) {
            Ok((client, eventloop)) => {
                self.publisher.client.store(Arc::new(client));
                self.eventloop = eventloop;
                self.protocol = next;
            }
            Err(e) => tracing::warn!(error = %e, "cannot build the MQTT {} client", next.name()),
        }
    }

    /// Publish retained `offline` and disconnect, flushing what is queued, for at
    /// most two seconds.
    async fn goodbye(mut self) {
        if !self.publisher.is_connected() {
            return;
        }
        let client = self.publisher.client.load_full();
        let _ = client.try_publish(
            &self.publisher.topics.availability,
            1,
            true,
            topics::OFFLINE.into(),
        );
        let _ = client.try_disconnect();
        let flushed = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Net::DisconnectSent) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if flushed.is_err() {
            tracing::warn!("MQTT disconnect did not complete within 2 s");
        }
        tracing::info!("MQTT disconnected");
    }
}
