//! `[mqtt]`: the broker (an external one, or the embedded one), the client's
//! identity, credentials and TLS, topics and quality of service.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MqttConfig {
    /// The broker to connect to; empty starts the embedded broker and connects to it.
    pub host: String,
    pub port: u16,
    /// Empty means `edgehead-<device_id>`.
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub keep_alive_secs: u64,
    /// `auto` (MQTT 5, falling back to 3.1.1 until one of them connects), `5` or
    /// `3.1.1`. The embedded broker is always spoken to in 3.1.1.
    pub protocol: MqttProtocol,
    /// Largest MQTT packet accepted or sent, in bytes; sample images travel in one packet.
    /// With MQTT 5 it is announced to the broker, which then never sends a larger one.
    pub max_packet_size: usize,
    /// Outgoing messages queued towards the broker before new predictions are dropped.
    pub queue: usize,
    /// Topic prefix; topics are `<base_topic>/<device_id>/...`.
    pub base_topic: String,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub predictions: TopicOptions,
    pub status: TopicOptions,
    pub responses: TopicOptions,
    pub tls: TlsConfig,
    pub embedded_broker: EmbeddedBrokerConfig,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 1883,
            client_id: String::new(),
            username: String::new(),
            password: String::new(),
            keep_alive_secs: 30,
            protocol: MqttProtocol::Auto,
            max_packet_size: 16 << 20,
            queue: 64,
            base_topic: "edgehead".into(),
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            predictions: TopicOptions {
                qos: 0,
                retain: false,
            },
            status: TopicOptions {
                qos: 1,
                retain: true,
            },
            responses: TopicOptions {
                qos: 1,
                retain: false,
            },
            tls: TlsConfig::default(),
            embedded_broker: EmbeddedBrokerConfig::default(),
        }
    }
}

/// Which MQTT version to speak to the broker.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum MqttProtocol {
    /// MQTT 5 first; while no connection has succeeded, each failed attempt
    /// switches between 5 and 3.1.1; the first that connects is kept.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "5")]
    V5,
    #[serde(rename = "3.1.1")]
    V311,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TopicOptions {
    pub qos: u8,
    pub retain: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TlsConfig {
    pub enabled: bool,
    /// PEM file of the CA that signed the broker's certificate; empty uses none (an error).
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for brokers that authenticate clients by certificate.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EmbeddedBrokerConfig {
    /// Where the embedded broker listens when `mqtt.host` is empty.
    pub listen: String,
    pub max_connections: usize,
    /// The one account the broker accepts (clients then must log in with it, the
    /// daemon's own included); empty: anonymous clients, allowed only when it
    /// listens on loopback.
    pub username: String,
    pub password: String,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:1883".into(),
            max_connections: 32,
            username: String::new(),
            password: String::new(),
        }
    }
}
