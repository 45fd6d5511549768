//! Validation: every value of a [`RawConfig`] checked, every problem reported at
//! once with its key ([`super::check`]), one `check_<section>` per section (the
//! shape of vector's `config/validation.rs`). The result is the typed [`Settings`].

use std::net::SocketAddr;
use std::time::Duration;

use super::backbone::{BackboneConfig, Threads};
use super::check::{Checker, ConfigError};
use super::mqtt::MqttConfig;
use super::raw::{HomeAssistantConfig, LearnConfig, LogConfig, RawConfig};
use super::source::{SourceConfig, SourceKind};
use super::web::{WebAuth, WebConfig};
use super::{classifiers, Settings};
use crate::names::{is_safe_name, valid_topic_prefix};

/// The host name as a device id: lower case, characters other than `A-Z a-z 0-9
/// - _` as `_`, at most 64; `edgehead` when there is none.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "edgehead".into()
    } else {
        cleaned
    }
}

/// Check every value of `raw`, collecting all problems.
pub fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
    let mut c = Checker::default();
    let device_id = if raw.device_id.is_empty() {
        host_name()
    } else {
        raw.device_id.clone()
    };
    c.check(is_safe_name(&device_id), "device_id", || {
        format!("{device_id:?} must be 1 to 64 characters of A-Z, a-z, 0-9, - and _")
    });
    c.check(!raw.state_dir.as_os_str().is_empty(), "state_dir", || {
        "must name a directory".into()
    });
    check_log(&mut c, &raw.log);
    check_source(&mut c, &raw.source);
    check_backbone(&mut c, &raw.backbone);
    let unknown_threshold = c.head("head", &raw.head);
    c.predictions("predictions", &raw.predictions);
    let classifiers = classifiers::resolve(
        &mut c,
        &classifiers::configured(&raw.classifiers),
        &raw.head,
        &raw.predictions,
        unknown_threshold,
        frame_size(&raw.source),
    );
    check_learn(&mut c, &raw.learn);
    let client_id = check_mqtt(&mut c, &raw.mqtt, &raw.learn, &device_id);
    let embedded_broker = embedded_broker(&mut c, &raw.mqtt);
    check_homeassistant(&mut c, &raw.homeassistant);
    let web_listen = check_web(&mut c, &raw.web);
    c.range("shutdown.grace_secs", raw.shutdown.grace_secs, 0.1, 600.0);
    if !c.problems.is_empty() {
        return Err(ConfigError {
            problems: c.problems,
        });
    }
    let topic_base = format!(
        "{}/{}",
        raw.mqtt.base_topic.trim_end_matches('/'),
        device_id
    );
    Ok(Settings {
        device_id,
        client_id,
        topic_base,
        embedded_broker,
        unknown_threshold,
        classifiers,
        state_dir: raw.state_dir,
        shutdown_grace: Duration::from_secs_f64(raw.shutdown.grace_secs),
        log: raw.log,
        source: raw.source,
        backbone: raw.backbone,
        head: raw.head,
        learn: raw.learn,
        mqtt: raw.mqtt,
        homeassistant: raw.homeassistant,
        web: raw.web,
        web_listen,
        predictions: raw.predictions,
        classifier_file: raw.classifiers,
    })
}

fn check_log(c: &mut Checker, log: &LogConfig) {
    c.check(
        !log.level.trim().is_empty() && tracing_subscriber::EnvFilter::try_new(&log.level).is_ok(),
        "log.level",
        || format!("{:?} is not a tracing filter (try \"info\")", log.level),
    );
    c.range(
        "log.summary_interval_secs",
        log.summary_interval_secs,
        1,
        86_400,
    );
}

/// The frame size when the source fixes it (camera and synthetic); other sources
/// are checked per frame.
pub(super) fn frame_size(s: &SourceConfig) -> Option<(u32, u32)> {
    match s.kind {
        SourceKind::Camera => Some((s.camera.width, s.camera.height)),
        SourceKind::Synthetic => Some((s.synthetic.width, s.synthetic.height)),
        _ => None,
    }
}

/// Check `[source]`: only the kind in use must be complete; every value is in range.
fn check_source(c: &mut Checker, s: &SourceConfig) {
    match s.kind {
        SourceKind::Camera => c.check(
            !s.camera.device.trim().is_empty(),
            "source.camera.device",
            || "must be an index such as 0 or a path such as /dev/video0".into(),
        ),
        SourceKind::Files => c.check(!s.files.path.trim().is_empty(), "source.files.path", || {
            "must name a folder or a glob".into()
        }),
        SourceKind::Synthetic => {}
        SourceKind::Http => {
            let u = s.http.url.trim();
            c.check(
                u.starts_with("http://") || u.starts_with("https://"),
                "source.http.url",
                || "must be an http:// or https:// URL".into(),
            );
            if !s.http.ca_file.as_os_str().is_empty() {
                c.file("source.http.ca_file", &s.http.ca_file);
            }
        }
        SourceKind::Command => c.check(
            !s.command.program.trim().is_empty(),
            "source.command.program",
            || "must name the program to start, such as \"rpicam-vid\" or \"ffmpeg\"".into(),
        ),
    }
    c.range(
        "source.command.frame_timeout_ms",
        s.command.frame_timeout_ms,
        100,
        3_600_000,
    );
    let h = &s.http;
    c.range("source.http.interval_ms", h.interval_ms, 10, 3_600_000);
    c.range(
        "source.http.connect_timeout_ms",
        h.connect_timeout_ms,
        100,
        600_000,
    );
    c.range(
        "source.http.read_timeout_ms",
        h.read_timeout_ms,
        100,
        600_000,
    );
    let reconnect = ("reconnect_min_ms", "reconnect_max_ms");
    c.backoff(
        "source.http",
        h.reconnect_min_ms,
        h.reconnect_max_ms,
        reconnect,
    );
    c.backoff(
        "source.command",
        s.command.restart_min_ms,
        s.command.restart_max_ms,
        ("restart_min_ms", "restart_max_ms"),
    );
    let cam = &s.camera;
    c.range("source.camera.width", cam.width, 16, 8192);
    c.range("source.camera.height", cam.height, 16, 8192);
    c.range("source.camera.fps", cam.fps, 1, 240);
    c.backoff(
        "source.camera",
        cam.reconnect_min_ms,
        cam.reconnect_max_ms,
        reconnect,
    );
    c.range("source.files.fps", s.files.fps, 0.001, 1000.0);
    c.range("source.synthetic.width", s.synthetic.width, 16, 8192);
    c.range("source.synthetic.height", s.synthetic.height, 16, 8192);
    c.range("source.synthetic.fps", s.synthetic.fps, 0.0, 1000.0);
}

fn check_backbone(c: &mut Checker, b: &BackboneConfig) {
    c.file("backbone.model", &b.model);
    c.range("backbone.input_width", b.input_width, 8, 4096);
    c.range("backbone.input_height", b.input_height, 8, 4096);
    c.check(b.mean.len() == 3, "backbone.mean", || {
        format!("needs 3 values (R, G, B), got {}", b.mean.len())
    });
    c.check(b.std.len() == 3, "backbone.std", || {
        format!("needs 3 values (R, G, B), got {}", b.std.len())
    });
    c.check(
        b.std.iter().all(|v| v.is_finite() && *v != 0.0) && b.mean.iter().all(|v| v.is_finite()),
        "backbone.std",
        || "mean and std must be finite and std non-zero".into(),
    );
    c.check(
        b.crop_fraction > 0.0 && b.crop_fraction <= 1.0,
        "backbone.crop_fraction",
        || format!("{} must be in (0, 1]", b.crop_fraction),
    );
    c.check(!b.output.trim().is_empty(), "backbone.output", || {
        "must name an output or give its index".into()
    });
    if let Threads::Count(n) = b.threads {
        c.range("backbone.threads", n, 1, 64);
    }
}

fn check_learn(c: &mut Checker, l: &LearnConfig) {
    c.range("learn.debounce_ms", l.debounce_ms, 0, 60_000);
    c.range("learn.max_classes", l.max_classes, 1, 10_000);
    c.range("learn.max_samples", l.max_samples, 1, 1_000_000);
    c.range("learn.max_image_bytes", l.max_image_bytes, 1024, 256 << 20);
    c.range("learn.max_bundle_mib", l.max_bundle_mib, 1, 64 << 10);
    c.range("learn.max_image_side", l.max_image_side, 16, 65_535);
    // A 32-bit board cannot address more than about 3 GiB in one process.
    let max_budget = if cfg!(target_pointer_width = "32") {
        1024
    } else {
        4096
    };
    c.range(
        "learn.decode_budget_mib",
        l.decode_budget_mib,
        1,
        max_budget,
    );
    c.range(
        "learn.idempotency_window_secs",
        l.idempotency_window_secs,
        0,
        86_400,
    );
    c.range("learn.thumbnail_side", l.thumbnail_side, 32, 4096);
    c.range("learn.queue", l.queue, 1, 10_000);
}

/// Check `[mqtt]`; returns the client id (`edgehead-<device_id>` unless set).
fn check_mqtt(c: &mut Checker, m: &MqttConfig, l: &LearnConfig, device_id: &str) -> String {
    c.check(m.port != 0, "mqtt.port", || "must not be 0".into());
    c.range("mqtt.keep_alive_secs", m.keep_alive_secs, 5, 65_535);
    c.range(
        "mqtt.max_packet_size",
        m.max_packet_size,
        10 << 10,
        256 << 20,
    );
    c.check(
        m.max_packet_size >= l.max_image_bytes + 4096,
        "mqtt.max_packet_size",
        || {
            format!(
                "{} is too small for learn.max_image_bytes ({}) plus headers",
                m.max_packet_size, l.max_image_bytes
            )
        },
    );
    c.range("mqtt.queue", m.queue, 1, 100_000);
    c.backoff(
        "mqtt",
        m.reconnect_min_ms,
        m.reconnect_max_ms,
        ("reconnect_min_ms", "reconnect_max_ms"),
    );
    c.check(valid_topic_prefix(&m.base_topic), "mqtt.base_topic", || {
        format!(
            "{:?} must be a non-empty topic without +, # or empty levels",
            m.base_topic
        )
    });
    for (key, t) in [
        ("mqtt.predictions.qos", m.predictions),
        ("mqtt.status.qos", m.status),
        ("mqtt.responses.qos", m.responses),
    ] {
        c.check(t.qos <= 2, key, || format!("{} must be 0, 1 or 2", t.qos));
    }
    let client_id = if m.client_id.is_empty() {
        format!("edgehead-{device_id}")
    } else {
        m.client_id.clone()
    };
    c.check(
        client_id.len() <= 65_535 && !client_id.contains(['+', '#', '/']),
        "mqtt.client_id",
        || format!("{client_id:?} must not contain +, # or /"),
    );
    c.check(
        m.password.is_empty() || !m.username.is_empty(),
        "mqtt.password",
        || "a password needs mqtt.username".into(),
    );
    if m.tls.enabled {
        check_tls(c, m);
    }
    client_id
}

fn check_tls(c: &mut Checker, m: &MqttConfig) {
    c.check(!m.host.trim().is_empty(), "mqtt.tls.enabled", || {
        "TLS needs an external broker (mqtt.host); the embedded broker is plain TCP".into()
    });
    c.file("mqtt.tls.ca_file", &m.tls.ca_file);
    let cert = !m.tls.client_cert.as_os_str().is_empty();
    let key = !m.tls.client_key.as_os_str().is_empty();
    c.check(cert == key, "mqtt.tls.client_key", || {
        "client_cert and client_key go together".into()
    });
    if cert {
        c.file("mqtt.tls.client_cert", &m.tls.client_cert);
    }
    if key {
        c.file("mqtt.tls.client_key", &m.tls.client_key);
    }
}

/// Where the embedded broker listens when `mqtt.host` is empty; `None` otherwise.
fn embedded_broker(c: &mut Checker, m: &MqttConfig) -> Option<SocketAddr> {
    c.range(
        "mqtt.embedded_broker.max_connections",
        m.embedded_broker.max_connections,
        2,
        10_000,
    );
    if !m.host.trim().is_empty() {
        return None;
    }
    let b = &m.embedded_broker;
    c.check(
        b.username.is_empty() == b.password.is_empty(),
        "mqtt.embedded_broker.password",
        || "give both mqtt.embedded_broker.username and password, or neither".into(),
    );
    match b.listen.parse::<SocketAddr>() {
        Ok(a) if !a.ip().is_loopback() && b.username.is_empty() => {
            c.problem(
                "mqtt.embedded_broker.listen",
                format!(
                    "{a} reaches beyond this machine, and the embedded broker would let anyone there teach, reset and delete: set mqtt.embedded_broker.username and password (clients such as Home Assistant then log in with them), listen on 127.0.0.1, or use your own broker (mqtt.host)"
                ),
            );
            None
        }
        Ok(a) => Some(a),
        Err(e) => {
            c.problem(
                "mqtt.embedded_broker.listen",
                format!(
                    "{:?} is not an address such as 0.0.0.0:1883: {e}",
                    m.embedded_broker.listen
                ),
            );
            None
        }
    }
}

fn check_homeassistant(c: &mut Checker, ha: &HomeAssistantConfig) {
    c.check(
        valid_topic_prefix(&ha.prefix),
        "homeassistant.prefix",
        || format!("{:?} is not a valid topic prefix", ha.prefix),
    );
    c.check(
        ha.expire_after_secs == 0 || (3..=86_400).contains(&ha.expire_after_secs),
        "homeassistant.expire_after_secs",
        || format!("{} must be 0 (never) or 3 to 86400", ha.expire_after_secs),
    );
    c.check(
        ha.image_interval_secs == 0.0 || (0.5..=86_400.0).contains(&ha.image_interval_secs),
        "homeassistant.image_interval_secs",
        || {
            format!(
                "{} must be 0 (no image) or 0.5 to 86400",
                ha.image_interval_secs
            )
        },
    );
    c.range("homeassistant.image_max_side", ha.image_max_side, 32, 4096);
}

/// Check `[web]`; returns the address to listen on when the console is enabled.
fn check_web(c: &mut Checker, w: &WebConfig) -> Option<SocketAddr> {
    c.range(
        "web.session_idle_secs",
        w.session_idle_secs,
        60,
        90 * 86_400,
    );
    c.range("web.live_fps", w.live_fps, 0.1, 30.0);
    c.range("web.live_max_side", w.live_max_side, 64, 4096);
    c.range("web.max_connections", w.max_connections, 4, 10_000);
    let cert = !w.tls_cert.as_os_str().is_empty();
    let key = !w.tls_key.as_os_str().is_empty();
    c.check(cert == key, "web.tls_key", || {
        "tls_cert and tls_key go together".into()
    });
    if cert {
        c.file("web.tls_cert", &w.tls_cert);
    }
    if key {
        c.file("web.tls_key", &w.tls_key);
    }
    let u = w.public_url.trim();
    c.check(
        u.is_empty() || u.starts_with("http://") || u.starts_with("https://"),
        "web.public_url",
        || "must be an http:// or https:// URL".into(),
    );
    if !w.enabled {
        return None;
    }
    let listen = match w.listen.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(e) => {
            c.problem(
                "web.listen",
                format!("{:?} is not an address such as 0.0.0.0:8480: {e}", w.listen),
            );
            return None;
        }
    };
    c.check(
        w.auth == WebAuth::Password || listen.ip().is_loopback(),
        "web.auth",
        || {
            format!(
                "\"none\" is allowed only when the console listens on loopback (127.0.0.1 or ::1), not on {listen}: anyone on the network could see the camera and change the classifiers"
            )
        },
    );
    Some(listen)
}
