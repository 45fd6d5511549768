//! One MQTT client over two protocol versions: rumqttc's 3.1.1 client (`rumqttc`)
//! and its MQTT 5 client (`rumqttc::v5`), behind the few operations the daemon
//! uses, so the connection task can switch between them.
//!
//! MQTT 5 is preferred because it lets the client protect itself (OASIS MQTT 5.0):
//! the CONNECT packet carries the Maximum Packet Size (3.1.2.11.4), so the broker
//! drops a larger message for this client instead of sending it and forcing a
//! disconnect; and the request subscription uses Retain Handling 2 (3.8.3.1), so
//! the broker never sends retained requests at all. MQTT 3.1.1 has neither: a
//! retained request arrives with the retain flag and is refused
//! ([`super::Connection`]), and an oversize one drops the connection, which the
//! reconnect backoff then slows down.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;

use super::MqttError;

/// The protocol version in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V311,
    V5,
}

impl Protocol {
    /// The other version, for the `auto` fallback.
    pub fn other(self) -> Self {
        match self {
            Protocol::V311 => Protocol::V5,
            Protocol::V5 => Protocol::V311,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::V311 => "3.1.1",
            Protocol::V5 => "5",
        }
    }
}

/// What the connection is built from; kept to build it again in the other version.
#[derive(Clone)]
pub struct Params {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    pub max_packet_size: usize,
    pub queue: usize,
    /// Username and password, when set.
    pub credentials: Option<(String, String)>,
    pub tls: Option<rumqttc::TlsConfiguration>,
    /// The last will: retained `payload` on `topic`.
    pub will: (String, &'static str),
}

/// The sending half: cheap to clone, never blocks (`try_*`).
#[derive(Clone)]
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

fn qos4(level: u8) -> rumqttc::QoS {
    match level {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(level: u8) -> v5::mqttbytes::QoS {
    match level {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        1 => v5::mqttbytes::QoS::AtLeastOnce,
        _ => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl Client {
    /// Queue a publish; false when the outgoing queue is full or closed.
    pub fn try_publish(&self, topic: &str, qos: u8, retain: bool, payload: Vec<u8>) -> bool {
        match self {
            Client::V311(c) => c.try_publish(topic, qos4(qos), retain, payload).is_ok(),
            Client::V5(c) => c.try_publish(topic, qos5(qos), retain, payload).is_ok(),
        }
    }

    /// Subscribe to the request filter, at QoS 1. With MQTT 5 the broker is asked
    /// never to send retained messages for it (Retain Handling 2).
    pub fn try_subscribe_requests(&self, filter: &str) -> bool {
        match self {
            Client::V311(c) => c.try_subscribe(filter, rumqttc::QoS::AtLeastOnce).is_ok(),
            Client::V5(c) => {
                let mut f = v5::mqttbytes::v5::Filter::new(filter, qos5(1));
                f.retain_forward_rule = v5::mqttbytes::v5::RetainForwardRule::Never;
                c.try_subscribe_many([f]).is_ok()
            }
        }
    }

    pub fn try_disconnect(&self) -> bool {
        match self {
            Client::V311(c) => c.try_disconnect().is_ok(),
            Client::V5(c) => c.try_disconnect().is_ok(),
        }
    }
}

/// What the event loop reports, in either version.
#[derive(Debug)]
pub enum Net {
    /// The broker accepted the connection.
    ConnAck,
    /// An incoming message.
    Publish {
        topic: String,
        payload: Bytes,
        retain: bool,
        dup: bool,
    },
    /// The DISCONNECT packet went out (shutdown).
    DisconnectSent,
    Other,
}

/// The receiving half: polled by the connection task alone.
/// Both loops are boxed: they are large (about 1 KB) and of different sizes.
pub enum EventLoop {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

impl EventLoop {
    /// The next event; an error means the connection is down (the next call
    /// reconnects).
    pub async fn poll(&mut self) -> Result<Net, String> {
        use rumqttc::{Event, Outgoing, Packet};
        match self {
            EventLoop::V311(l) => match l.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(Net::ConnAck),
                Ok(Event::Incoming(Packet::Publish(p))) => Ok(Net::Publish {
                    topic: p.topic,
                    payload: p.payload,
                    retain: p.retain,
                    dup: p.dup,
                }),
                Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(Net::DisconnectSent),
                Ok(_) => Ok(Net::Other),
                Err(e) => Err(e.to_string()),
            },
            EventLoop::V5(l) => match l.poll().await {
                Ok(v5::Event::Incoming(v5::Incoming::ConnAck(_))) => Ok(Net::ConnAck),
                Ok(v5::Event::Incoming(v5::Incoming::Publish(p))) => Ok(Net::Publish {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload,
                    retain: p.retain,
                    dup: p.dup,
                }),
                Ok(v5::Event::Outgoing(Outgoing::Disconnect)) => Ok(Net::DisconnectSent),
                Ok(_) => Ok(Net::Other),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

/// Build a client and its event loop speaking `protocol`; nothing connects until
/// the event loop is polled.
pub fn build(p: &Params, protocol: Protocol) -> Result<(Client, EventLoop), MqttError> {
    let max = u32::try_from(p.max_packet_size).unwrap_or(u32::MAX);
    Ok(match protocol {
        Protocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(&p.client_id, &p.host, p.port);
            o.set_keep_alive(p.keep_alive)
                .set_clean_session(true)
                .set_max_packet_size(p.max_packet_size, p.max_packet_size)
                .set_request_channel_capacity(p.queue)
                .set_last_will(rumqttc::LastWill::new(
                    &p.will.0,
                    p.will.1,
                    rumqttc::QoS::AtLeastOnce,
                    true,
                ));
            if let Some((u, pw)) = &p.credentials {
                o.set_credentials(u, pw);
            }
            if let Some(tls) = &p.tls {
                o.set_transport(rumqttc::Transport::tls_with_config(tls.clone()));
            }
            let (c, l) = rumqttc::AsyncClient::new(o, p.queue);
            (Client::V311(c), EventLoop::V311(Box::new(l)))
        }
        Protocol::V5 => {
            let mut o = v5::MqttOptions::new(&p.client_id, &p.host, p.port);
            o.set_keep_alive(p.keep_alive)
                .set_clean_start(true)
                .set_max_packet_size(Some(max))
                .set_request_channel_capacity(p.queue)
                .set_last_will(v5::mqttbytes::v5::LastWill::new(
                    &p.will.0,
                    p.will.1,
                    qos5(1),
                    true,
                    None,
                ));
            if let Some((u, pw)) = &p.credentials {
                o.set_credentials(u, pw);
            }
            if let Some(tls) = &p.tls {
                o.set_transport(rumqttc::Transport::tls_with_config(tls.clone()));
            }
            let (c, l) = v5::AsyncClient::new(o, p.queue);
            (Client::V5(c), EventLoop::V5(Box::new(l)))
        }
    })
}
