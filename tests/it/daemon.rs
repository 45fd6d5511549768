//! The daemon end to end against a real mosquitto: predictions, availability,
//! signals, broker restarts, configuration errors, the embedded broker.

use std::time::Duration;

use crate::harness::{
    assert_exit_2, config_file, edit_config, free_port, run_cli, use_embedded_broker, wait_until,
    Client, Mosquitto, Process,
};

const BASE: &str = "edgehead/it";

#[tokio::test(flavor = "multi_thread")]
async fn predictions_arrive_with_the_documented_schema() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), broker.port, "");
    let mut sub = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    let _daemon = Process::start(&config);
    sub.wait_for(&format!("{BASE}/availability"), 60, |m| {
        m.text() == "online"
    })
    .await;
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let p = sub
            .wait_for(&format!("{BASE}/default/prediction"), 30, |_| true)
            .await
            .json();
        // No head yet: label is null, and the embedding norm shows the backbone ran.
        assert!(p["label"].is_null(), "{p}");
        assert!(p["head"].is_null());
        assert_eq!(p["confidence"], 0.0);
        assert!(p["top"].as_array().expect("top").is_empty());
        assert!(p["embedding_norm"].as_f64().expect("norm") > 1.0);
        assert!(
            p["latency_ms"].as_f64().expect("latency")
                >= p["inference_ms"].as_f64().expect("inference")
        );
        assert!(p["inference_ms"].as_f64().expect("inference") > 0.0);
        assert!(p["captured_at"].as_str().expect("time").ends_with('Z'));
        // The model's name and the first 12 hex digits of its feature identity.
        let backbone = p["backbone"].as_str().expect("backbone");
        let digest = backbone
            .strip_prefix("efficientnet-lite0-features-int8w@")
            .expect("model name");
        assert!(
            digest.len() == 12 && digest.chars().all(|c| c.is_ascii_hexdigit()),
            "{backbone}"
        );
        seqs.push(p["seq"].as_u64().expect("seq"));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // The retained status and Home Assistant discovery are there for late subscribers.
    let mut late =
        Client::connect(broker.port, &[&format!("{BASE}/status"), "homeassistant/#"]).await;
    let status = late
        .wait_for(&format!("{BASE}/status"), 10, |m| m.retain)
        .await
        .json();
    assert_eq!(status["source"]["state"], "running");
    let discovery = late
        .wait_for("homeassistant/sensor/it/label/config", 10, |m| m.retain)
        .await
        .json();
    assert_eq!(discovery["state_topic"], format!("{BASE}/default/label"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_leaves_offline_through_the_last_will() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), broker.port, "");
    let mut sub = Client::connect(broker.port, &[&format!("{BASE}/availability")]).await;
    let mut daemon = Process::start(&config);
    sub.wait_for(&format!("{BASE}/availability"), 60, |m| {
        m.text() == "online"
    })
    .await;
    daemon.signal("KILL");
    daemon.wait(10);
    sub.wait_for(&format!("{BASE}/availability"), 20, |m| {
        m.text() == "offline"
    })
    .await;
    // Retained: a client that subscribes afterwards reads offline too.
    let m = Client::retained(broker.port, &format!("{BASE}/availability")).await;
    assert_eq!(m.text(), "offline");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_publishes_offline_and_exits_zero() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), broker.port, "");
    let mut sub = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    let mut daemon = Process::start(&config);
    sub.wait_for(&format!("{BASE}/default/prediction"), 60, |_| true)
        .await;
    daemon.terminate(15);
    sub.wait_for(&format!("{BASE}/availability"), 10, |m| {
        m.text() == "offline"
    })
    .await;
    let m = Client::retained(broker.port, &format!("{BASE}/availability")).await;
    assert_eq!(m.text(), "offline");
    let log = daemon.log_text();
    assert!(
        log.contains("SIGTERM received") && log.contains("stopped"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_survives_a_broker_restart_and_resumes_publishing() {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), broker.port, "");
    let mut daemon = Process::start(&config);
    {
        let mut sub = Client::connect(broker.port, &[&format!("{BASE}/default/prediction")]).await;
        sub.wait_for(&format!("{BASE}/default/prediction"), 60, |_| true)
            .await;
    }
    broker.restart();
    // The restarted broker has no retained messages: `online` must be re-published,
    // and requests re-subscribed, by the daemon itself.
    let mut sub = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    sub.wait_for(&format!("{BASE}/availability"), 30, |m| {
        m.text() == "online"
    })
    .await;
    // ... and retained, for whoever subscribes later.
    let m = Client::retained(broker.port, &format!("{BASE}/availability")).await;
    assert_eq!(m.text(), "online");
    let first = sub
        .wait_for(&format!("{BASE}/default/prediction"), 30, |_| true)
        .await
        .json();
    let later = sub
        .wait_for(&format!("{BASE}/default/prediction"), 30, |m| {
            m.json()["seq"].as_u64() > first["seq"].as_u64()
        })
        .await;
    assert!(later.json()["seq"].as_u64() > first["seq"].as_u64());
    let reply = sub.request(BASE, "classes", serde_json::json!({})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert!(
        daemon.child.try_wait().expect("try_wait").is_none(),
        "daemon still running"
    );
    // check-config beside the running daemon: the configuration is fine (exit
    // 0), and it says the state directory is in use.
    let (code, stdout, stderr) =
        run_cli(&["--config", config.to_str().expect("utf8"), "check-config"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("in use by a running edgehead") && stdout.contains("configuration OK"),
        "{stdout}{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_broker_serves_outside_clients() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), 1, "");
    use_embedded_broker(&config, port);
    let mut daemon = Process::start(&config);
    let mut sub = loop {
        // The broker comes up with the daemon; retry until it accepts us.
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break Client::connect(port, &[&format!("{BASE}/#")]).await;
        }
        assert!(
            daemon.child.try_wait().expect("try_wait").is_none(),
            "daemon exited:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sub.wait_for(&format!("{BASE}/availability"), 30, |m| {
        m.text() == "online"
    })
    .await;
    let p = sub
        .wait_for(&format!("{BASE}/default/prediction"), 30, |_| true)
        .await
        .json();
    assert!(p["seq"].as_u64().is_some());
    let reply = sub.request(BASE, "head", serde_json::json!({})).await;
    assert_eq!(reply["status"], "ok");
    daemon.terminate(15);
}

#[test]
fn a_bad_config_names_every_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[mqtt]\nprot = 1883\n[source]\nkind = \"files\"\n[predictions]\ntop_k = 0\n",
    )
    .expect("write");
    assert_exit_2(&path, "check-config", &["mqtt.prot", "unknown key"]);
    std::fs::write(&path, "[mqtt]\nport = \"eighteen\"\n").expect("write");
    assert_exit_2(&path, "run", &["mqtt.port"]);
    std::fs::write(&path, "[predictions]\ntop_k = 0\n[backbone]\nstd = [1.0]\n").expect("write");
    assert_exit_2(
        &path,
        "check-config",
        &["predictions.top_k", "backbone.std"],
    );
}

#[test]
fn a_model_that_does_not_load_is_a_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_file(dir.path(), 1883, "");
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"this is not a protobuf").expect("write");
    edit_config(&path, |t| {
        t.replace(
            &crate::harness::model().display().to_string(),
            &junk.display().to_string(),
        )
    });
    assert_exit_2(&path, "run", &["cannot load model", "junk.onnx"]);
}

#[test]
fn check_and_print_config_on_the_shipped_config() {
    let shipped = crate::harness::root().join("config/edgehead.toml");
    let (code, stdout, stderr) =
        run_cli(&["--config", shipped.to_str().expect("utf8"), "print-config"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("[mqtt]") && stdout.contains("base_topic"));
    let dir = tempfile::tempdir().expect("tempdir");
    // Password given in the environment is masked in print-config.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgehead"))
        .args(["print-config"])
        .env("EDGEHEAD__MQTT__USERNAME", "u")
        .env("EDGEHEAD__MQTT__PASSWORD", "s3cret")
        .env("EDGEHEAD__STATE_DIR", dir.path())
        .current_dir(crate::harness::root())
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("s3cret") && text.contains("********"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn predictions_flow_over_tls_and_a_wrong_ca_is_refused() {
    let broker = Mosquitto::start_tls();
    let tls = broker.tls.as_ref().expect("tls listener");
    let dir = tempfile::tempdir().expect("tempdir");
    let tls_config = |ca: &std::path::Path| {
        format!(
            "\n[mqtt.tls]\nenabled = true\nca_file = \"{}\"\n",
            ca.display()
        )
    };
    let config = config_file(dir.path(), tls.port, &tls_config(&tls.ca));
    let mut sub = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    let mut daemon = Process::start(&config);
    sub.wait_for(&format!("{BASE}/availability"), 60, |m| {
        m.text() == "online"
    })
    .await;
    sub.wait_for(&format!("{BASE}/default/prediction"), 30, |_| true)
        .await;
    daemon.terminate(15);

    // A CA that did not sign the broker's certificate: the daemon refuses the
    // broker, says why, retries, and stays up.
    let other = tempfile::tempdir().expect("tempdir");
    let (wrong_ca, _, _) = crate::harness::make_certificates(other.path(), "other");
    let dir2 = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir2.path(), tls.port, &tls_config(&wrong_ca));
    let mut daemon = Process::start(&config);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !daemon.log_text().contains("MQTT connect failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no connect failure logged:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        daemon.child.try_wait().expect("try_wait").is_none(),
        "daemon exited"
    );
    assert!(!daemon.log_text().contains("MQTT connected"));
}

#[cfg(feature = "camera")]
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_camera_is_retried_and_reported_while_the_daemon_stays_up() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(
        dir.path(),
        broker.port,
        "\n[source.camera]\ndevice = \"/dev/video-not-plugged-in\"\nreconnect_min_ms = 100\nreconnect_max_ms = 400\n",
    );
    edit_config(&config, |t| {
        t.replace("kind = \"files\"", "kind = \"camera\"")
    });
    let mut sub = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    let mut daemon = Process::start(&config);
    sub.wait_for(&format!("{BASE}/availability"), 60, |m| {
        m.text() == "online"
    })
    .await;
    let status = sub
        .wait_for(&format!("{BASE}/status"), 30, |m| {
            m.json()["source"]["state"] == "reconnecting"
        })
        .await
        .json();
    let error = status["source"]["error"].as_str().expect("error text");
    assert!(error.contains("video-not-plugged-in"), "{status}");
    assert!(status["source"]["retry_in_ms"].as_u64().expect("retry") <= 400);
    // Requests are still served while the camera is away.
    let reply = sub.request(BASE, "classes", serde_json::json!({})).await;
    assert_eq!(reply["status"], "ok");
    daemon.terminate(15);
}

#[test]
fn an_embedded_broker_address_in_use_is_a_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), 1, "");
    use_embedded_broker(&config, port);
    assert_exit_2(&config, "run", &["cannot listen", "mqtt.host"]);
}

#[test]
fn the_packaged_config_differs_from_the_demo_one_only_where_a_board_needs_it() {
    use edgehead::config::{load, RawConfig, SourceKind, Sources};
    let read = |p: &str| {
        load(&Sources {
            file: Some(crate::harness::root().join(p)),
            env: Some(Default::default()),
        })
        .unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    let demo = read("config/edgehead.toml");
    let board = read("deploy/edgehead.toml");
    // The demo file spells out the built-in defaults.
    assert_eq!(demo, RawConfig::default());
    assert_eq!(board.source.kind, SourceKind::Camera);
    assert_eq!(
        board.state_dir,
        std::path::PathBuf::from("/var/lib/edgehead")
    );
    assert!(board
        .backbone
        .model
        .starts_with("/usr/share/edgehead/models"));
    let mut aligned = board.clone();
    aligned.source.kind = demo.source.kind;
    aligned.state_dir = demo.state_dir.clone();
    aligned.backbone.model = demo.backbone.model.clone();
    aligned.source.files.path = demo.source.files.path.clone();
    assert_eq!(
        aligned, demo,
        "deploy/edgehead.toml drifted from config/edgehead.toml"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_id_is_the_installation_s_own_and_a_takeover_is_named() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), broker.port, "");
    let daemon = Process::start(&config);
    let mut c = Client::connect(broker.port, &[&format!("{BASE}/availability")]).await;
    c.wait_for(&format!("{BASE}/availability"), 60, |m| {
        m.text() == "online"
    })
    .await;
    let id = std::fs::read_to_string(dir.path().join("state/installation-id")).expect("id kept");
    let id = id.trim();
    assert_eq!(id.len(), 16, "{id}");
    // The guessable id of earlier versions no longer takes the session over.
    let _guess = Client::connect_as(broker.port, "edgehead-it", &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !daemon.log_text().contains("MQTT connection lost"),
        "{}",
        daemon.log_text()
    );
    // Its own id does, each time: the daemon says why.
    for _ in 0..3 {
        let _thief = Client::connect_as(broker.port, &format!("edgehead-it-{id}"), &[]).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let log = daemon.log_text();
    assert!(
        log.contains("another client connected with the same client id")
            || log.contains("another client may be using the same client id"),
        "{log}"
    );
    // check-config shows the id the daemon uses.
    let (code, stdout, stderr) =
        run_cli(&["--config", config.to_str().expect("utf8"), "check-config"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("as edgehead-it-{id}")), "{stdout}");
}

/// An MQTT 3.1.1 CONNECT of client `id`, and whether the broker accepted it
/// (the stream stays open while the caller keeps it).
fn raw_connect(
    port: u16,
    id: &str,
    login: Option<(&str, &str)>,
) -> (Option<std::net::TcpStream>, bool) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (None, false);
    };
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let field = |b: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    };
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        if login.is_some() { 0xC2 } else { 0x02 },
        0,
        60,
    ];
    field(id.as_bytes(), &mut body);
    if let Some((u, p)) = login {
        field(u.as_bytes(), &mut body);
        field(p.as_bytes(), &mut body);
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    let _ = s.write_all(&packet);
    let mut ack = [0u8; 4];
    let accepted = s.read_exact(&mut ack).is_ok() && ack[0] == 0x20 && ack[3] == 0;
    (Some(s), accepted)
}

#[test]
fn the_embedded_broker_needs_an_account_beyond_loopback_and_enforces_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), 1, "");
    let port = free_port();
    use_embedded_broker(&config, port);
    edit_config(&config, |t| {
        t.replace(&format!("127.0.0.1:{port}"), &format!("0.0.0.0:{port}"))
    });
    assert_exit_2(
        &config,
        "check-config",
        &["mqtt.embedded_broker.listen", "username"],
    );
    // With an account: the daemon logs in with it, anonymous clients are refused.
    edit_config(&config, |t| {
        t + "username = \"ha\"\npassword = \"broker secret\"\n"
    });
    let mut daemon = Process::start(&config);
    assert!(
        wait_until(60, || raw_connect(
            port,
            "it-probe",
            Some(("ha", "broker secret"))
        )
        .1),
        "{}",
        daemon.log_text()
    );
    // The daemon itself is in (with the account) once it says so.
    daemon.wait_for_log("MQTT connected", 60);
    assert!(
        !raw_connect(port, "anonymous", None).1,
        "anonymous accepted"
    );
    assert!(
        !raw_connect(port, "wrong", Some(("ha", "guess"))).1,
        "wrong password accepted"
    );
    let (code, _, stderr) = run_cli(&["--config", config.to_str().expect("utf8"), "print-config"]);
    assert_eq!(code, 0, "{stderr}");
    daemon.terminate(15);
    assert!(
        !daemon.log_text().contains("MQTT connect failed"),
        "{}",
        daemon.log_text()
    );
}

#[test]
fn a_refused_then_repeated_client_id_does_not_leave_the_daemon_without_a_broker() {
    // rumqttd 0.20: fill the slots, connect with an id (refused at capacity),
    // free a slot, connect with that id again: the broker panicked and refused
    // everyone from then on. The daemon must not stay up without a broker.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), 1, "");
    let port = free_port();
    use_embedded_broker(&config, port);
    edit_config(&config, |t| t + "max_connections = 4\n");
    let mut daemon = Process::start(&config);
    daemon.wait_for_log("MQTT connected", 60);
    let mut slots = Vec::new();
    for i in 0..8 {
        let (s, ok) = raw_connect(port, &format!("filler-{i}"), None);
        if ok {
            slots.push(s);
        }
    }
    let _refused = raw_connect(port, "twice", None);
    slots.pop();
    std::thread::sleep(Duration::from_millis(300));
    let _again = raw_connect(port, "twice", None);
    drop(slots);
    // Either the broker still serves (a fresh client gets in and the daemon is
    // up), or the daemon ends non-zero for its service manager to restart it.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(code) = daemon.child.try_wait().expect("try_wait") {
            assert_ne!(code.code(), Some(0), "{}", daemon.log_text());
            assert!(
                daemon.log_text().contains("stopped accepting connections"),
                "{}",
                daemon.log_text()
            );
            return;
        }
        if std::time::Instant::now() > deadline {
            assert!(
                raw_connect(port, "fresh", None).1,
                "the broker refuses everyone and the daemon stays up:\n{}",
                daemon.log_text()
            );
            daemon.terminate(15);
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
