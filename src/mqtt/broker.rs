//! The embedded MQTT broker (rumqttd), for boards with no broker of their own.
//!
//! It runs on its own threads and accepts outside clients (mosquitto_sub, Home
//! Assistant) as well as the daemon's own connection. rumqttd cannot be stopped, and
//! reports a failed listener only in its log: the address is checked before start,
//! and the thread's end is reported as an error.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen on {addr} for the embedded MQTT broker: {source} (is another broker running? set mqtt.host to use it)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the embedded MQTT broker did not start listening on {0}")]
    NotListening(SocketAddr),
    #[error("cannot start the embedded MQTT broker: {0}")]
    Start(String),
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    /// The address the daemon's own client connects to.
    pub connect_addr: SocketAddr,
    /// Resolves if the broker's thread ends (it should not).
    pub ended: oneshot::Receiver<String>,
}

/// Start the broker on `listen` and wait until it accepts connections.
pub fn start(
    listen: SocketAddr,
    max_connections: usize,
    max_packet_size: usize,
) -> Result<EmbeddedBroker, BrokerError> {
    // rumqttd only logs a failed bind: find out first.
    drop(
        TcpListener::bind(listen).map_err(|source| BrokerError::Bind {
            addr: listen,
            source,
        })?,
    );
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: max_packet_size,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "edgehead-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections,
            max_outgoing_packet_count: 200,
            // Per topic filter the router keeps up to count × size bytes of history:
            // keep that small on a board with little RAM.
            max_segment_size: max_packet_size.max(1 << 20),
            max_segment_count: 2,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("edgehead".to_string(), server)])),
        ..Default::default()
    };
    let (ended_tx, ended) = oneshot::channel();
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            let why = match broker.start() {
                Ok(()) => "the broker stopped".to_string(),
                Err(e) => e.to_string(),
            };
            let _ = ended_tx.send(why);
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;

    let connect_addr = if listen.ip().is_unspecified() {
        SocketAddr::new(
            if listen.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            listen.port(),
        )
    } else {
        listen
    };
    // The broker binds asynchronously: wait until it answers an MQTT CONNECT.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers_connect(connect_addr) {
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening(listen));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(%listen, "embedded MQTT broker listening");
    Ok(EmbeddedBroker {
        connect_addr,
        ended,
    })
}

/// Connect, send an MQTT 3.1.1 CONNECT, expect a CONNACK, and disconnect cleanly.
fn answers_connect(addr: SocketAddr) -> bool {
    let probe = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let id = format!("edgehead-probe-{}", std::process::id());
        let mut packet = vec![0x10, (12 + id.len()) as u8];
        packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10]);
        packet.extend_from_slice(&(id.len() as u16).to_be_bytes());
        packet.extend_from_slice(id.as_bytes());
        s.write_all(&packet)?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack)?;
        s.write_all(&[0xE0, 0])?;
        Ok(ack[0] == 0x20 && ack[3] == 0)
    };
    probe().unwrap_or(false)
}
