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
//! `mqtt.max_packet_size` on a request topic) is retried slowly, not three times a
//! second.

pub mod broker;
pub mod payload;
pub mod topics;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{Settings, TopicOptions};
use crate::stats::Stats;
pub use topics::Topics;

/// How long a connection must stay up before the reconnect backoff starts again
/// from `mqtt.reconnect_min_ms`.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// A request received on `<base>/request/<op>[/<arg>]`.
#[derive(Debug, Clone)]
pub struct Request {
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

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Sends messages without ever waiting: a full queue drops the message and counts it.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    pub topics: Arc<Topics>,
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
            .try_publish(topic, qos(options.qos), options.retain, payload)
            .is_ok()
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
    pub fn try_publish_prediction(&self, payload: Vec<u8>) -> bool {
        let sent = self.is_connected()
            && self.try_send(&self.topics.prediction, self.predictions, payload);
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

    pub fn try_publish_head(&self, payload: &Value) -> bool {
        self.try_send(
            &self.topics.head,
            self.status,
            payload.to_string().into_bytes(),
        )
    }

    /// Answer a request on `<base>/response/<op>`.
    pub fn try_respond(&self, op: &str, payload: &Value) -> bool {
        let sent = self.try_send(
            &self.topics.response(op),
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
    publisher: Publisher,
    requests_tx: Option<mpsc::Sender<Request>>,
    backoff: Backoff,
    announcements: Announcements,
    /// When the current connection was acknowledged.
    connected_at: Option<Instant>,
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
    requests_tx: mpsc::Sender<Request>,
    stats: Arc<Stats>,
) -> Result<(Publisher, Connection), MqttError> {
    let m = &settings.raw.mqtt;
    let topics = Arc::new(Topics::new(&settings.topic_base));
    let (host, port) = match broker {
        Some(addr) => (addr.ip().to_string(), addr.port()),
        None => (m.host.clone(), m.port),
    };
    let mut options = MqttOptions::new(&settings.client_id, host, port);
    options
        .set_keep_alive(Duration::from_secs(m.keep_alive_secs))
        .set_clean_session(true)
        .set_max_packet_size(m.max_packet_size, m.max_packet_size)
        .set_request_channel_capacity(m.queue)
        .set_last_will(LastWill::new(
            &topics.availability,
            topics::OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
    if !m.username.is_empty() {
        options.set_credentials(&m.username, &m.password);
    }
    if m.tls.enabled {
        options.set_transport(rumqttc::Transport::tls_with_config(tls_config(&m.tls)?));
    }
    let (client, eventloop) = AsyncClient::new(options, m.queue);
    let publisher = Publisher {
        client,
        topics: topics.clone(),
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
        )
    } else {
        Vec::new()
    };
    Ok((
        publisher.clone(),
        Connection {
            eventloop,
            publisher,
            requests_tx: Some(requests_tx),
            backoff: Backoff::from_millis(m.reconnect_min_ms, m.reconnect_max_ms),
            announcements,
            connected_at: None,
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
        let mut ok = p
            .client
            .try_subscribe(p.topics.request_filter.clone(), QoS::AtLeastOnce)
            .is_ok();
        ok &= p
            .client
            .try_publish(
                &p.topics.availability,
                QoS::AtLeastOnce,
                true,
                topics::ONLINE,
            )
            .is_ok();
        for (topic, config) in &self.announcements {
            ok &= p
                .client
                .try_publish(topic, QoS::AtLeastOnce, true, config.to_string())
                .is_ok();
        }
        let kept: Vec<(String, Vec<u8>)> = p
            .retained
            .lock()
            .map(|k| k.iter().map(|(t, v)| (t.clone(), v.clone())).collect())
            .unwrap_or_default();
        for (topic, payload) in kept {
            ok &= p
                .client
                .try_publish(topic, QoS::AtLeastOnce, true, payload)
                .is_ok();
        }
        if !ok {
            tracing::warn!(
                "MQTT queue full right after connecting; some announcements were dropped"
            );
        }
        tracing::info!(topics = %p.topics.base, "MQTT connected");
    }

    fn on_publish(&self, p: rumqttc::Publish) {
        let Some((op, arg)) = self.publisher.topics.parse_request(&p.topic) else {
            return;
        };
        if p.payload.is_empty() {
            // What clearing a retained message looks like to subscribers; no
            // operation takes a zero-byte payload.
            tracing::debug!(topic = %p.topic, "ignored an empty request (a retained message being cleared)");
            return;
        }
        let request = Request {
            op: op.to_string(),
            arg: arg.map(str::to_string),
            payload: p.payload,
            received: Instant::now(),
            dup: p.dup,
        };
        self.publisher
            .stats
            .requests
            .fetch_add(1, Ordering::Relaxed);
        let refused = match &self.requests_tx {
            _ if p.retain => {
                tracing::warn!(topic = %p.topic, "refused a retained request: clear it with an empty retained message on that topic");
                Some("refused: this request was delivered with the retain flag (a copy the broker keeps), so it is not carried out; requests must be published without retain. Clear it by publishing an empty retained message to the same topic")
            }
            None => Some("shutting down"),
            Some(tx) => match tx.try_send(request.clone()) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    Some("busy: too many requests waiting, try again shortly")
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Some("shutting down"),
            },
        };
        if let Some(why) = refused {
            self.publisher
                .stats
                .requests_failed
                .fetch_add(1, Ordering::Relaxed);
            self.publisher.try_respond(
                &request.op,
                &payload::response_error(why, request.transaction().as_ref()),
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
                    Ok(Event::Incoming(Packet::ConnAck(_))) => self.on_connect(),
                    Ok(Event::Incoming(Packet::Publish(p))) => self.on_publish(p),
                    Ok(_) => {}
                    Err(error) => {
                        let was = self.publisher.connected.swap(false, Ordering::Relaxed);
                        // Only a connection that lasted starts the backoff over.
                        if self.connected_at.take().is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
                            self.backoff.reset();
                        }
                        let delay = self.backoff.next_delay();
                        if was {
                            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost");
                        } else {
                            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "MQTT connect failed");
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

    /// Publish retained `offline` and disconnect, flushing what is queued, for at
    /// most two seconds.
    async fn goodbye(mut self) {
        if !self.publisher.is_connected() {
            return;
        }
        let p = &self.publisher;
        let _ = p.client.try_publish(
            &p.topics.availability,
            QoS::AtLeastOnce,
            true,
            topics::OFFLINE,
        );
        let _ = p.client.try_disconnect();
        let flushed = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
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
