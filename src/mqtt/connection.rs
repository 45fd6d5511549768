//! The connection task: the one owner of rumqttc's event loop.
//!
//! It only polls: it never awaits anything but `poll()` and its own backoff.
//! After every CONNACK it re-subscribes and re-announces (`online`, Home
//! Assistant discovery, and every retained message the daemon keeps: status,
//! head), since a broker without persistence forgets retained messages when it
//! restarts. Requests are handed to a [`RequestSink`] that never blocks, and a
//! refusal (a full queue: `busy`) is answered at once. A request delivered with
//! the retain flag is never carried out: it is a stale copy the broker keeps, and
//! would otherwise run again at every reconnect.
//!
//! Reconnecting backs off exponentially, and the backoff starts again from its
//! minimum only after a connection has stayed up for [`STABLE_AFTER`]: a broker
//! that drops the connection at once (a retained message above
//! `mqtt.max_packet_size` on a request topic, with MQTT 3.1.1) is retried slowly,
//! not three times a second. With MQTT 5 ([`super::client`]) neither happens: the
//! broker knows the largest packet the daemon takes and sends no retained requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::client::{self, Client, EventLoop, Net, Params, Protocol};
use super::publisher::Publisher;
use super::topics::{self, Route, Topics};
use crate::backoff::Backoff;
use crate::config::{MqttProtocol, Settings};
use crate::stats::Stats;

/// How long a connection must stay up before the reconnect backoff starts again
/// from `mqtt.reconnect_min_ms`.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Shortest time between two re-publications for Home Assistant's birth message.
pub const BIRTH_GAP: Duration = Duration::from_secs(10);

/// A request as it arrived on `<base>/[<classifier>/]request/<op>[/<arg>]`.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The classifier it addresses: `None` for the device-level topics (the first
    /// classifier), else the name in the topic.
    pub classifier: Option<String>,
    pub op: String,
    /// Topic levels after the operation (`add_sample/<label>`).
    pub arg: Option<String>,
    pub payload: Bytes,
    /// The broker's DUP flag: a QoS 1 redelivery of a message that may have been
    /// received before.
    pub dup: bool,
    /// Where the answer goes: `<reply>/<op>` (`<base>/response` or
    /// `<base>/<name>/response`).
    pub reply: String,
}

/// Where the connection task hands requests. Implemented by the learning layer
/// ([`crate::learn::Router`]): it must never block or wait.
pub trait RequestSink: Send {
    /// Hand `request` over; `Err(reason)` refuses it (a full queue: "busy", an
    /// unknown classifier), and the reason is answered on the response topic.
    fn try_send(&self, request: Incoming) -> Result<(), String>;
}

/// The connection task: owns the event loop.
pub struct Connection {
    eventloop: EventLoop,
    params: Params,
    protocol: Protocol,
    /// `auto`, and no connection has succeeded yet: failures switch versions.
    probing: bool,
    publisher: Publisher,
    /// Where requests go; `None` once the daemon drains (shutting down).
    requests: Option<Box<dyn RequestSink>>,
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
    /// Connections in a row that the broker closed before [`STABLE_AFTER`].
    short_in_a_row: u32,
}

/// Connections closed early in a row before the daemon says what may be wrong.
pub const TAKEOVER_SUSPECTED_AFTER: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("TLS set-up failed: {0}")]
    Tls(String),
}

/// Build the client, its publisher handle and the connection task, which hands
/// requests to `requests`. `broker` is the embedded broker's address, when it runs.
/// Errors: the TLS files cannot be read.
pub fn connect(
    settings: &Settings,
    broker: Option<std::net::SocketAddr>,
    requests: Box<dyn RequestSink>,
    stats: Arc<Stats>,
) -> Result<(Publisher, Connection), MqttError> {
    let m = &settings.mqtt;
    let topics = Arc::new(Topics::new(&settings.topic_base));
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
        // On the embedded broker the daemon logs in with its account, if any.
        credentials: match broker {
            Some(_) => {
                let b = &m.embedded_broker;
                (!b.username.is_empty()).then(|| (b.username.clone(), b.password.clone()))
            }
            None => (!m.username.is_empty()).then(|| (m.username.clone(), m.password.clone())),
        },
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
        stats,
        connected: Arc::new(AtomicBool::new(false)),
        predictions: m.predictions,
        status: m.status,
        responses: m.responses,
        retained: Default::default(),
        answers: Default::default(),
    };
    let birth = settings
        .homeassistant
        .discovery
        .then(|| format!("{}/status", settings.homeassistant.prefix));
    Ok((
        publisher.clone(),
        Connection {
            eventloop,
            params,
            protocol,
            probing,
            publisher,
            requests: Some(requests),
            backoff: Backoff::from_millis(m.reconnect_min_ms, m.reconnect_max_ms),
            birth,
            connected_at: None,
            short_in_a_row: 0,
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
        let kept = p.retained.topics();
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
        // Answers first: a client is waiting for each.
        self.publisher.flush_answers();
        if !self.publisher.is_connected() || !self.subscribe_owed() {
            return;
        }
        loop {
            if self.backlog.is_empty() {
                let owed = self.publisher.retained.take_owed();
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
        if payload.is_empty() {
            // What clearing a retained message looks like to subscribers; no
            // operation takes a zero-byte payload.
            tracing::debug!(
                topic,
                "ignored an empty request (a retained message being cleared)"
            );
            return;
        }
        let request = Incoming {
            classifier: match route {
                Route::Device => None,
                Route::Classifier(name) => Some(name.to_string()),
            },
            reply: self.publisher.topics.reply_base(route),
            op: op.to_string(),
            arg: arg.map(str::to_string),
            payload,
            dup,
        };
        self.publisher
            .stats
            .requests
            .fetch_add(1, Ordering::Relaxed);
        let refused = if retain {
            tracing::warn!(
                topic,
                "refused a retained request: clear it with an empty retained message on that topic"
            );
            Some("refused: this request was delivered with the retain flag (a copy the broker keeps), so it is not carried out; requests must be published without retain. Clear it by publishing an empty retained message to the same topic".to_string())
        } else {
            match &self.requests {
                None => Some("shutting down".to_string()),
                Some(sink) => sink.try_send(request.clone()).err(),
            }
        };
        if let Some(why) = refused {
            self.publisher
                .stats
                .requests_failed
                .fetch_add(1, Ordering::Relaxed);
            let transaction = crate::answer::transaction_of(&request.payload);
            self.publisher.respond(
                &request.reply,
                &request.op,
                &crate::answer::error(&why, transaction.as_ref()),
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
                _ = drain.cancelled(), if self.requests.is_some() => {
                    // Dropping the sink lets the learning tasks finish and end.
                    self.requests = None;
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
                        match self.connected_at.take().map(|t| t.elapsed() >= STABLE_AFTER) {
                            Some(true) => {
                                self.backoff.reset();
                                self.short_in_a_row = 0;
                            }
                            Some(false) => self.short_in_a_row += 1,
                            None => {}
                        }
                        self.say_if_taken_over(&error);
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

    /// Say clearly when another client seems to use this client id: the broker
    /// said so (MQTT 5: Session Taken Over), or [`TAKEOVER_SUSPECTED_AFTER`]
    /// connections in a row were closed early (MQTT 3.1.1 gives no reason). The
    /// backoff, not reset by short connections, already slows the tug of war.
    fn say_if_taken_over(&self, error: &str) {
        let id = &self.params.client_id;
        if error.contains("SessionTakenOver") {
            tracing::error!(client_id = %id, "the broker closed this connection because another client connected with the same client id (session taken over); give each client its own mqtt.client_id");
        } else if self.short_in_a_row > 0
            && self.short_in_a_row.is_multiple_of(TAKEOVER_SUSPECTED_AFTER)
        {
            tracing::error!(client_id = %id, in_a_row = self.short_in_a_row, "the broker keeps closing the connection soon after it opens: another client may be using the same client id, or the broker refuses what this client publishes (ACL); reconnecting ever more slowly");
        }
    }

    /// `mqtt.protocol = "auto"` before the first connection: try the other version
    /// next (a broker without MQTT 5 refuses or drops a version-5 CONNECT).
    fn switch_protocol(&mut self) {
        let next = self.protocol.other();
        match client::build(&self.params, next) {
            Ok((client, eventloop)) => {
                self.publisher.client.store(Arc::new(client as Client));
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
        // Answers still waiting go out first (as many as the queue takes).
        self.publisher.flush_answers();
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
