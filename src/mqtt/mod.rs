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

/// Shortest time between two re-publications for Home Assistant's birth message.
pub const BIRTH_GAP: Duration = Duration::from_secs(10);

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
    /// again after each connect and after Home Assistant's birth message.
    retained: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    /// Retained topics to remove (an empty retained message) that are not sent
    /// yet: sent after the next connect if not before.
    clears: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// Retained topics (kept or cleared) that a full queue refused while
    /// connected; bounded by the number of topics.
    owed: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// The Home Assistant bridge's queue ([`crate::homeassistant`]).
    ha: mpsc::Sender<crate::homeassistant::Event>,
    /// `homeassistant.image_interval_secs` and `image_max_side`; `None`: no image.
    pub image_every: Option<(Duration, u32)>,
}

impl Publisher {
    /// Whether the client is connected to the broker now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Publish; a retained payload is also kept. While disconnected a retained
    /// message is only kept (the connect publishes every kept one), so nothing
    /// piles up in the client's queue during an outage; when the queue is full it
    /// is owed and sent by the connection task once there is room.
    fn try_send(&self, topic: &str, options: TopicOptions, payload: Vec<u8>) -> bool {
        if !options.retain {
            return self
                .client
                .load()
                .try_publish(topic, options.qos, false, payload);
        }
        if let Ok(mut kept) = self.retained.lock() {
            kept.insert(topic.to_string(), payload.clone());
        }
        if let Ok(mut clears) = self.clears.lock() {
            clears.remove(topic);
        }
        if !self.is_connected() {
            return true;
        }
        let sent = self
            .client
            .load()
            .try_publish(topic, options.qos, true, payload);
        if !sent {
            self.owe(topic);
        }
        sent
    }

    /// Remember that `topic`'s retained message (or its removal) could not be
    /// queued: the connection task sends it when the queue has room.
    fn owe(&self, topic: &str) {
        if let Ok(mut owed) = self.owed.lock() {
            owed.insert(topic.to_string());
        }
    }

    /// Retained topics whose removal has not been sent yet.
    pub fn pending_clears(&self) -> Vec<String> {
        self.clears
            .lock()
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Tell the Home Assistant bridge; a full queue drops the event (the next
    /// prediction or heartbeat carries the state again).
    pub fn notify(&self, event: crate::homeassistant::Event) {
        let _ = self.ha.try_send(event);
    }

    /// Tell the Home Assistant bridge, waiting for room in its queue (for events
    /// nothing would repeat: classes, the teach label, results).
    pub async fn notify_wait(&self, event: crate::homeassistant::Event) {
        let _ = self.ha.send(event).await;
    }

    /// Send `topic`'s kept retained payload, or its removal when it is to be
    /// cleared; `true` when sent or when neither is owed any more.
    fn send_kept(&self, topic: &str) -> bool {
        let payload = self
            .retained
            .lock()
            .ok()
            .and_then(|k| k.get(topic).cloned());
        let client = self.client.load();
        match payload {
            Some(p) => client.try_publish(topic, 1, true, p),
            None => {
                let clear = self
                    .clears
                    .lock()
                    .map(|c| c.contains(topic))
                    .unwrap_or(false);
                if !clear {
                    return true;
                }
                let sent = client.try_publish(topic, 1, true, Vec::new());
                if sent {
                    if let Ok(mut c) = self.clears.lock() {
                        c.remove(topic);
                    }
                }
                sent
            }
        }
    }

    /// Publish `payload` retained on `topic`, and keep it for re-publishing.
    pub fn try_publish_retained(&self, topic: &str, payload: Vec<u8>) -> bool {
        self.try_send(
            topic,
            TopicOptions {
                qos: 1,
                retain: true,
            },
            payload,
        )
    }

    /// Remove the retained message of `topic` (an empty retained payload) and stop
    /// re-publishing it.
    ///
    /// While disconnected, or when the queue is full, the removal is owed and
    /// sent after the next connect (or when there is room).
    pub fn clear_retained(&self, topic: &str) {
        if let Ok(mut kept) = self.retained.lock() {
            kept.remove(topic);
        }
        if let Ok(mut clears) = self.clears.lock() {
            clears.insert(topic.to_string());
        }
        if self.is_connected() && !self.send_kept(topic) {
            self.owe(topic);
        }
    }

    /// Publish `payload` on `topic` once, not retained (QoS 1); dropped while
    /// disconnected (a late event would be wrong).
    pub fn try_publish_event(&self, topic: &str, payload: Vec<u8>) -> bool {
        self.is_connected() && self.client.load().try_publish(topic, 1, false, payload)
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
    /// Home Assistant's birth topic (`<prefix>/status`) when discovery is on: an
    /// `online` there re-publishes everything retained.
    birth: Option<String>,
    /// When the current connection was acknowledged.
    connected_at: Option<Instant>,
    /// Retained messages to publish again since the last connect (see `on_connect`).
    backlog: std::collections::VecDeque<String>,
    /// Subscription filters not yet queued since the last connect.
    subscriptions: Vec<String>,
    /// When Home Assistant's birth message last made everything go out again.
    birth_answered: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("TLS set-up failed: {0}")]
    Tls(String),
}

/// Build the client, its publisher handle and the connection task. `ha` is the
/// Home Assistant bridge's queue.
pub fn connect(
    settings: &Settings,
    broker: Option<std::net::SocketAddr>,
    requests_tx: Vec<mpsc::Sender<Request>>,
    stats: Arc<Stats>,
    ha: mpsc::Sender<crate::homeassistant::Event>,
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
        clears: Default::default(),
        owed: Default::default(),
        ha,
        image_every: {
            let h = &settings.raw.homeassistant;
            (h.image_interval_secs > 0.0).then(|| {
                (
                    Duration::from_secs_f64(h.image_interval_secs),
                    h.image_max_side,
                )
            })
        },
    };
    let birth = settings
        .raw
        .homeassistant
        .discovery
        .then(|| format!("{}/status", settings.raw.homeassistant.prefix));
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
            birth,
            connected_at: None,
            backlog: std::collections::VecDeque::new(),
            subscriptions: Vec::new(),
            birth_answered: None,
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
        self.subscriptions = vec![
            p.topics.request_filter.clone(),
            p.topics.classifier_request_filter.clone(),
        ];
        self.subscriptions.extend(self.birth.clone());
        tracing::info!(topics = %p.topics.base, protocol = self.protocol.name(), "MQTT connected");
        self.republish();
    }

    /// Subscribe to what is still owed since the connect; a full queue leaves the
    /// rest for the next event (a dropped subscription would leave requests
    /// unanswered until the next reconnect).
    fn subscribe_owed(&mut self) -> bool {
        let client = self.publisher.client.load();
        while let Some(filter) = self.subscriptions.first() {
            if !client.try_subscribe_requests(filter) {
                return false;
            }
            self.subscriptions.remove(0);
        }
        true
    }

    /// Publish `online` and every retained message again (discovery configs,
    /// states, status, heads), through a backlog: with many classifiers it can be
    /// more than the outgoing queue holds at once.
    ///
    /// The backlog holds topics: each is published with the payload it has when
    /// its turn comes, so a state that changed meanwhile goes out as it is now,
    /// and a config removed meanwhile is skipped.
    fn republish(&mut self) {
        let p = &self.publisher;
        self.backlog.clear();
        self.backlog.push_back(p.topics.availability.clone());
        let kept: Vec<String> = p
            .retained
            .lock()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default();
        // Discovery configs first, so that Home Assistant has the entities (and
        // their options) before it reads their states.
        let (configs, states): (Vec<_>, Vec<_>) = kept.into_iter().partition(|t| {
            self.birth
                .as_ref()
                .and_then(|b| b.strip_suffix("/status"))
                .is_some_and(|prefix| t.starts_with(prefix) && t.ends_with("/config"))
        });
        self.backlog.extend(configs);
        self.backlog.extend(states);
        self.backlog.extend(self.publisher.pending_clears());
        self.flush_backlog();
    }

    /// Publish the retained messages still owed since the last connect, as many as
    /// the outgoing queue takes now; the rest after the next event.
    ///
    /// Subscriptions go first; when the backlog is done, the retained topics a
    /// full queue refused since (see [`Publisher`]) follow.
    fn flush_backlog(&mut self) {
        if !self.publisher.is_connected() || !self.subscribe_owed() {
            return;
        }
        loop {
            if self.backlog.is_empty() {
                let owed = self
                    .publisher
                    .owed
                    .lock()
                    .map(|mut o| std::mem::take(&mut *o))
                    .unwrap_or_default();
                if owed.is_empty() {
                    return;
                }
                self.backlog.extend(owed);
            }
            let Some(topic) = self.backlog.pop_front() else {
                return;
            };
            let sent = if topic == self.publisher.topics.availability {
                self.publisher
                    .client
                    .load()
                    .try_publish(&topic, 1, true, topics::ONLINE.into())
            } else {
                self.publisher.send_kept(&topic)
            };
            if !sent {
                self.backlog.push_front(topic);
                return;
            }
        }
    }

    fn on_publish(&mut self, topic: &str, payload: Bytes, retain: bool, dup: bool) {
        if self.birth.as_deref() == Some(topic) {
            // At most once per BIRTH_GAP: any client may publish there, and a
            // retained birth message arrives at every connect (which republishes
            // anyway).
            let due = self.birth_answered.is_none_or(|t| t.elapsed() >= BIRTH_GAP);
            if payload.as_ref() == b"online" && !retain && due {
                tracing::info!(
                    topic,
                    "Home Assistant (re)started: publishing discovery and states again"
                );
                self.birth_answered = Some(Instant::now());
                self.republish();
            }
            return;
        }
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
