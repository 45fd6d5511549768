//! Test harness: a real mosquitto broker on a free loopback port, an MQTT client
//! that records what it sees, and the edgehead daemon (in-process or as a process).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::mpsc;

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures/images")
}

pub fn model() -> PathBuf {
    root().join("models/efficientnet-lite0-features-int8w.onnx")
}

/// `../shared/data`, when present. Tests that need it skip with a message, unless
/// `EDGEHEAD_REQUIRE_DATA=1` (CI), where its absence is a failure.
pub fn shared_data() -> Option<PathBuf> {
    let p = root().join("../shared/data");
    if p.join("hymenoptera").is_dir() {
        return Some(p);
    }
    if std::env::var("EDGEHEAD_REQUIRE_DATA").as_deref() == Ok("1") {
        panic!("EDGEHEAD_REQUIRE_DATA=1 but {} is missing", p.display());
    }
    eprintln!(
        "skipping: {} is absent (set EDGEHEAD_REQUIRE_DATA=1 to fail instead)",
        p.display()
    );
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_listening(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A mosquitto process on 127.0.0.1, killed on drop.
pub struct Mosquitto {
    pub port: u16,
    /// A TLS listener, when started with [`Mosquitto::start_tls`].
    pub tls: Option<TlsFiles>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Who may connect: `allow_anonymous true`, or logins and an ACL.
    access: String,
}

/// A CA and a server certificate for 127.0.0.1/localhost, made with openssl.
pub struct TlsFiles {
    pub port: u16,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Make a CA and a server certificate signed by it, in `dir`.
pub fn make_certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (ca_key, ca, key, csr, cert) = (
        format!("{name}-ca.key"),
        format!("{name}-ca.crt"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=edgehead test CA",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write san");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            &cert,
        ],
    );
    // mosquitto started as root drops to its own user, which must read these
    // throwaway test files.
    use std::os::unix::fs::PermissionsExt;
    for (p, mode) in [(dir.to_path_buf(), 0o755), (dir.join(&key), 0o644)] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    (dir.join(ca), dir.join(cert), dir.join(key))
}

impl Mosquitto {
    pub fn start() -> Self {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: apt-get install mosquitto (.ci/run does)"
        );
        let mut m = Self {
            port: free_port(),
            tls: None,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            access: "allow_anonymous true\n".into(),
        };
        m.spawn();
        m
    }

    /// A broker that lets in only `logins` (user, password), each restricted by
    /// the ACL file `acl` (copied, so that mosquitto's own user can read it).
    pub fn start_with_acl(logins: &[(&str, &str)], acl: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let passwd = dir.path().join("passwd");
        for (i, (user, password)) in logins.iter().enumerate() {
            let mut cmd = Command::new("/usr/bin/mosquitto_passwd");
            cmd.arg("-b");
            if i == 0 {
                cmd.arg("-c");
            }
            let status = cmd
                .arg(&passwd)
                .arg(user)
                .arg(password)
                .status()
                .expect("mosquitto_passwd (package mosquitto)");
            assert!(status.success(), "mosquitto_passwd failed");
        }
        let acl_copy = dir.path().join("acl");
        std::fs::copy(acl, &acl_copy).expect("copy the ACL");
        for (p, mode) in [
            (dir.path().to_path_buf(), 0o755),
            (passwd.clone(), 0o644),
            (acl_copy.clone(), 0o644),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        let mut m = Self {
            port: free_port(),
            tls: None,
            access: format!(
                "allow_anonymous false\npassword_file {}\nacl_file {}\n",
                passwd.display(),
                acl_copy.display()
            ),
            dir,
            child: None,
        };
        m.spawn();
        m
    }

    /// A broker with a plain listener (`port`, for test clients) and a TLS one.
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, cert, key) = make_certificates(dir.path(), "server");
        let mut m = Self {
            port: free_port(),
            tls: Some(TlsFiles {
                port: free_port(),
                ca,
                cert,
                key,
            }),
            dir,
            child: None,
            access: "allow_anonymous true\n".into(),
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let mut text = format!(
            "per_listener_settings false\n{}persistence false\nlog_dest stderr\nlistener {} 127.0.0.1\n",
            self.access, self.port,
        );
        if let Some(t) = &self.tls {
            text += &format!(
                "listener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                t.port,
                t.ca.display(),
                t.cert.display(),
                t.key.display()
            );
        }
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let stderr = std::fs::File::create(self.dir.path().join("mosquitto.log")).expect("log");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        for port in std::iter::once(self.port).chain(self.tls.as_ref().map(|t| t.port)) {
            assert!(
                wait_listening(port, Duration::from_secs(10)),
                "mosquitto did not listen on {port}: {}",
                std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
                    + &std::fs::read_to_string(self.dir.path().join("mosquitto.conf"))
                        .unwrap_or_default()
            );
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop and start again on the same port (retained messages are lost: no persistence).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {:?}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// An MQTT client for tests: subscribes, records every message, publishes.
pub struct Client {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg>,
    pub seen: Vec<Msg>,
}

impl Client {
    /// Connect to 127.0.0.1:`port`, subscribe to `filters`, and wait for the SUBACKs.
    pub async fn connect(port: u16, filters: &[&str]) -> Self {
        Self::connect_as(port, &format!("test-{}", fastrand::u64(..)), filters).await
    }

    /// [`Client::connect`] with the client id `id`.
    pub async fn connect_as(port: u16, id: &str, filters: &[&str]) -> Self {
        Self::connect_with(port, id, None, filters).await
    }

    /// [`Client::connect`] with the client id `id`, logging in with `login`.
    pub async fn connect_with(
        port: u16,
        id: &str,
        login: Option<(&str, &str)>,
        filters: &[&str],
    ) -> Self {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        if let Some((user, password)) = login {
            opts.set_credentials(user, password);
        }
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(64 << 20, 64 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let wanted = filters.len();
        for f in filters {
            client
                .subscribe(*f, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        tokio::spawn(async move {
            let mut acks = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks += 1;
                        if acks == wanted {
                            let _ = ready_tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
                if tx.is_closed() {
                    break;
                }
            }
        });
        if wanted > 0 {
            tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
                .await
                .expect("SUBACK within 10 s");
        }
        Self {
            client,
            rx,
            seen: Vec::new(),
        }
    }

    /// Wait for a message on `topic` that satisfies `pred`, for at most `secs`.
    pub async fn wait_for(&mut self, topic: &str, secs: u64, pred: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| {
                    let topics: Vec<_> = self
                        .seen
                        .iter()
                        .rev()
                        .take(5)
                        .map(|m| format!("{} {}", m.topic, m.text()))
                        .collect();
                    panic!("no matching message on {topic} within {secs} s; last seen: {topics:#?}")
                })
                .expect("client alive");
            self.seen.push(msg.clone());
            if msg.topic == topic && pred(&msg) {
                return msg;
            }
        }
    }

    /// The next message on any subscribed topic; `None` after `secs` without one.
    pub async fn next(&mut self, secs: u64) -> Option<Msg> {
        let m = tokio::time::timeout(Duration::from_secs(secs), self.rx.recv())
            .await
            .ok()??;
        self.seen.push(m.clone());
        Some(m)
    }

    /// Where the messages seen so far end, for [`Client::wait_since`].
    pub fn mark(&self) -> usize {
        self.seen.len()
    }

    /// Like [`Client::wait_for`], but a matching message already read (while
    /// waiting for something else) after `mark` counts too: a side effect may
    /// arrive before the answer to the request that caused it.
    pub async fn wait_since(
        &mut self,
        mark: usize,
        topic: &str,
        secs: u64,
        pred: impl Fn(&Msg) -> bool,
    ) -> Msg {
        let early = self.seen.get(mark..).unwrap_or_default();
        if let Some(m) = early.iter().find(|m| m.topic == topic && pred(m)) {
            return m.clone();
        }
        self.wait_for(topic, secs, pred).await
    }

    /// What a client subscribing now reads first on `topic`: the retained message.
    pub async fn retained(port: u16, topic: &str) -> Msg {
        let mut late = Self::connect(port, &[topic]).await;
        let m = late.wait_for(topic, 10, |_| true).await;
        assert!(m.retain, "{topic}: {} is not retained", m.text());
        m
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }

    /// Publish with the retain flag, as a misconfigured client might.
    pub async fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
            .expect("publish");
    }

    /// Publish `body` to `op` with this `transaction` and wait for its answer.
    pub async fn request_with(
        &mut self,
        base: &str,
        op: &str,
        mut body: Value,
        transaction: &str,
    ) -> Value {
        body["transaction"] = Value::String(transaction.to_string());
        self.publish(&format!("{base}/request/{op}"), body.to_string())
            .await;
        let response = format!("{base}/response/{op}");
        self.wait_for(&response, 60, |m| m.json()["transaction"] == transaction)
            .await
            .json()
    }

    /// Publish a request and wait for the response carrying our transaction id.
    pub async fn request(&mut self, base: &str, op: &str, mut body: Value) -> Value {
        let transaction = format!("t-{}", fastrand::u64(..));
        body["transaction"] = Value::String(transaction.clone());
        self.publish(&format!("{base}/request/{op}"), body.to_string())
            .await;
        let response = format!("{base}/response/{op}");
        self.wait_for(&response, 60, |m| {
            m.json()["transaction"] == transaction.as_str()
        })
        .await
        .json()
    }
}

/// Rewrite the configuration file at `path` with `edit`.
pub fn edit_config(path: &Path, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).expect("read config");
    std::fs::write(path, edit(text)).expect("write config");
}

/// Switch a configuration from `config_file` to the embedded broker on `port`.
pub fn use_embedded_broker(path: &Path, port: u16) {
    edit_config(path, |t| {
        t.replace("host = \"127.0.0.1\"", "host = \"\"")
            + &format!("\n[mqtt.embedded_broker]\nlisten = \"127.0.0.1:{port}\"\n")
    });
}

/// The daemon binary under test: this build's, or `EDGEHEAD_TEST_BIN` (to show that a
/// new test fails against an older binary).
pub fn bin() -> PathBuf {
    std::env::var_os("EDGEHEAD_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_edgehead")))
}

/// Write a daemon configuration for tests; `extra` is appended TOML.
pub fn config_file(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("edgehead.toml");
    let text = format!(
        r#"device_id = "it"
state_dir = "{state}"

[log]
summary_interval_secs = 1

[source]
kind = "files"

[source.files]
path = "{fixtures}"
fps = 5.0

[backbone]
model = "{model}"

[mqtt]
host = "127.0.0.1"
port = {port}
keep_alive_secs = 5
reconnect_min_ms = 100
reconnect_max_ms = 1000

[shutdown]
grace_secs = 10.0

[web]
listen = "127.0.0.1:0"
{extra}
"#,
        state = dir.join("state").display(),
        fixtures = fixtures().display(),
        model = model().display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// The daemon binary as a child process; killed on drop.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn start(config: &Path) -> Self {
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin())
            .arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start edgehead");
        Self { child, log }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for the process to exit, for at most `secs`; its exit code.
    pub fn wait(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                panic!(
                    "edgehead did not exit within {secs} s; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then expect exit code 0 within `secs`.
    pub fn terminate(&mut self, secs: u64) {
        self.signal("TERM");
        assert_eq!(self.wait(secs), Some(0), "log:\n{}", self.log_text());
    }

    /// Wait until the log holds `needle`, for at most `secs` (blocking; the log
    /// is in the failure message).
    pub fn wait_for_log(&self, needle: &str, secs: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while !self.log_text().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in the log within {secs} s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's peak resident memory (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .expect("VmHWM of a running daemon")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `edgehead --config CONFIG COMMAND`, expect exit code 2 and an error
/// message on stderr that contains every one of `needles`.
pub fn assert_exit_2(config: &Path, command: &str, needles: &[&str]) {
    let (code, _, stderr) = run_cli(&["--config", config.to_str().expect("utf8"), command]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        needles.iter().all(|n| stderr.contains(n)),
        "expected {needles:?} in: {stderr}"
    );
}

/// Whether `f` holds within `secs` (tried every 100 ms; blocking).
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Run the binary to completion with `args`; (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run edgehead");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The topic base of the daemons `config_file` configures.
pub const BASE: &str = "edgehead/it";

/// Base64 (standard alphabet) of `b`.
pub fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The bytes of a fixture image.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).expect("read fixture")
}

/// A broker, a daemon with `extra` config, and a client subscribed to everything
/// below the daemon, once it is online.
pub async fn start_daemon(extra: &str) -> (Mosquitto, tempfile::TempDir, Process, Client) {
    start_daemon_prepared(extra, |_| {}).await
}

/// [`start_daemon`], with `prepare` run on the test's directory before the
/// daemon starts (a console password, for instance).
pub async fn start_daemon_prepared(
    extra: &str,
    prepare: impl FnOnce(&Path),
) -> (Mosquitto, tempfile::TempDir, Process, Client) {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    prepare(dir.path());
    let config = config_file(dir.path(), broker.port, extra);
    let daemon = Process::start(&config);
    let mut c = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    c.wait_for(&format!("{BASE}/availability"), 60, |m| {
        m.text() == "online"
    })
    .await;
    (broker, dir, daemon, c)
}

/// Add one sample of `hat` and one of `shoes`.
pub async fn teach_hat_and_shoes(c: &mut Client) {
    for (label, file) in [("hat", "hat-1.jpg"), ("shoes", "shoes-1.jpg")] {
        let r = c
            .request(
                BASE,
                "add_sample",
                json!({"label": label, "image": b64(&fixture_bytes(file))}),
            )
            .await;
        assert_eq!(r["status"], "ok", "{r}");
    }
}

pub async fn sample_ids(c: &mut Client) -> Vec<(u64, String)> {
    let r = c.request(BASE, "samples", json!({})).await;
    r["data"]["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| {
            (
                s["id"].as_u64().expect("id"),
                s["label"].as_str().expect("label").to_string(),
            )
        })
        .collect()
}
