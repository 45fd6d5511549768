//! MQTT: the one task that owns rumqttc's event loop ([`connection`]), the
//! [`Publisher`] handle everything else sends with, topic names ([`topics`]),
//! payloads ([`payload`]), the kept retained messages ([`retained`]), the client
//! over two protocol versions ([`client`]) and the embedded broker ([`broker`]).
//!
//! Nothing here knows what a request does or who listens to predictions:
//! requests leave through a [`connection::RequestSink`], and the Home Assistant
//! bridge is a task of its own that publishes through a [`Publisher`].

pub mod answers;
pub mod broker;
pub mod client;
pub mod connection;
pub mod payload;
pub mod publisher;
pub mod retained;
pub mod topics;

pub use connection::{connect, Connection, Incoming, MqttError, RequestSink};
pub use publisher::Publisher;
pub use topics::{ClassifierTopics, Topics};
