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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

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
    /// Resolves if the broker's thread ends, or if it stops accepting
    /// connections (see [`WATCH_EVERY`]); the daemon then exits non-zero and its
    /// service manager restarts it (rumqttd cannot be restarted in-process).
    pub ended: oneshot::Receiver<String>,
}

/// The one account the broker accepts: `(username, password)`.
pub type Account = (String, String);

/// How often the watch looks at the broker.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);
/// TCP connects in a row that must fail before the broker counts as dead.
pub const WATCH_FAILURES: u32 = 3;

/// Set by the panic hook when code of rumqttd panics. rumqttd 0.20 can panic
/// while holding a lock (a client id refused at capacity, then connecting again
/// once a slot is free): the lock stays poisoned and every later client is
/// refused, while its listener still accepts TCP connections.
static BROKER_PANICKED: AtomicBool = AtomicBool::new(false);

/// Install (once) a panic hook that notes panics in rumqttd's code, then runs
/// the hook that was there.
fn note_broker_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .location()
                .is_some_and(|l| l.file().contains("rumqttd"))
            {
                BROKER_PANICKED.store(true, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Start the broker on `listen` (accepting only `account` when given) and wait
/// until it accepts connections; a thread then watches that it still does.
pub fn start(
    listen: SocketAddr,
    max_connections: usize,
    max_packet_size: usize,
    account: Option<Account>,
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
        auth: account.clone().map(|(u, p)| HashMap::from([(u, p)])),
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
    note_broker_panics();
    let (ended_tx, ended) = oneshot::channel();
    let ended_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(ended_tx)));
    let end = move |why: String| {
        if let Some(tx) = ended_tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(why);
        }
    };
    let broker_end = end.clone();
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            let why = match broker.start() {
                Ok(()) => "the broker stopped".to_string(),
                Err(e) => e.to_string(),
            };
            broker_end(why);
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
    while !answers_connect(connect_addr, account.as_ref()) {
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening(listen));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(%listen, authenticated = account.is_some(), "embedded MQTT broker listening");
    std::thread::Builder::new()
        .name("mqtt-broker-watch".into())
        .spawn(move || watch(connect_addr, end))
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    Ok(EmbeddedBroker {
        connect_addr,
        ended,
    })
}

/// Every [`WATCH_EVERY`]: when rumqttd panicked, or its listener refused
/// [`WATCH_FAILURES`] TCP connects in a row, say why through `end` and stop.
/// Only TCP is tried: a broker at `max_connections` refuses MQTT clients and is
/// not dead, and a CONNECT with a fresh client id every time would make rumqttd
/// keep a record of each.
fn watch(addr: SocketAddr, end: impl Fn(String)) {
    let mut failures = 0;
    loop {
        std::thread::sleep(WATCH_EVERY);
        if BROKER_PANICKED.load(Ordering::SeqCst) {
            end("the embedded MQTT broker stopped accepting connections: rumqttd panicked (see the log); restarting the daemon restarts it".into());
            return;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
            failures = 0;
            continue;
        }
        failures += 1;
        tracing::warn!(
            failures,
            "the embedded MQTT broker's listener refused a connection"
        );
        if failures >= WATCH_FAILURES {
            end(format!(
                "the embedded MQTT broker stopped accepting connections ({failures} attempts {} s apart failed)",
                WATCH_EVERY.as_secs()
            ));
            return;
        }
    }
}

/// The CONNECT packet (MQTT 3.1.1, clean session, keep-alive 10 s) of client
/// `id`, logging in with `account` when given.
fn connect_packet(id: &str, account: Option<&Account>) -> Vec<u8> {
    let field = |b: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&(b.len().min(u16::MAX as usize) as u16).to_be_bytes());
        out.extend_from_slice(&b[..b.len().min(u16::MAX as usize)]);
    };
    let flags = if account.is_some() { 0xC2 } else { 0x02 };
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 10];
    field(id.as_bytes(), &mut body);
    if let Some((u, p)) = account {
        field(u.as_bytes(), &mut body);
        field(p.as_bytes(), &mut body);
    }
    // Remaining length, as MQTT's variable-length integer.
    let mut packet = vec![0x10];
    let mut n = body.len();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if n == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// Connect, send an MQTT 3.1.1 CONNECT, expect a CONNACK, and disconnect cleanly.
fn answers_connect(addr: SocketAddr, account: Option<&Account>) -> bool {
    let probe = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let id = format!(
            "edgehead-probe-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        );
        s.write_all(&connect_packet(&id, account))?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack)?;
        s.write_all(&[0xE0, 0])?;
        Ok(ack[0] == 0x20 && ack[3] == 0)
    };
    probe().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packets_are_mqtt_3_1_1_with_and_without_a_login() {
        assert_eq!(
            connect_packet("a", None),
            [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 1, b'a']
        );
        let account = ("u".to_string(), "pw".to_string());
        assert_eq!(
            connect_packet("a", Some(&account)),
            [
                0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 10, 0, 1, b'a', 0, 1, b'u', 0,
                2, b'p', b'w'
            ]
        );
        // A long id needs two bytes of remaining length.
        let long = "x".repeat(200);
        let p = connect_packet(&long, None);
        assert_eq!(&p[..3], [0x10, 212 % 128 + 128, 1]);
        assert_eq!(p.len(), 3 + 212);
    }
}
