//! The console's HTTP API against the real daemon: nothing without a session,
//! no state change without the session's CSRF token, wrong passwords limited,
//! bad input (oversize, malformed, path-traversing) refused with nothing stored,
//! run-time classifiers surviving a restart, and MQTT and HTTP answering the
//! same request the same way.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{b64, fixture_bytes, start_daemon, Client, Mosquitto, Process, BASE};

/// A test's password (set before the daemon starts).
pub const PASSWORD: &str = "correct horse battery";

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub body: Value,
    pub bytes: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

/// A console client: its session cookie and CSRF token once logged in.
pub struct Console {
    pub url: String,
    agent: ureq::Agent,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

/// The console's URL from the daemon's log (it listens on a free port).
pub fn console_url(daemon: &Process) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = daemon.log_text();
        if let Some(url) = log
            .split("console=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        {
            return url.trim_end_matches('/').to_string();
        }
        assert!(Instant::now() < deadline, "no console URL in:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Set the console password of the state directory under `dir` (before start).
pub fn set_password(dir: &Path) {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    edgehead::web::auth::set_password(&state, PASSWORD).expect("set password");
}

impl Console {
    pub fn of(daemon: &Process) -> Self {
        Self {
            url: console_url(daemon),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(120))
                .redirects(0)
                .build(),
            cookie: None,
            csrf: None,
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&[u8], &str)>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.agent.request(method, &format!("{}{path}", self.url));
        if let Some(c) = &self.cookie {
            req = req.set("Cookie", c);
        }
        for (k, v) in extra {
            req = req.set(k, v);
        }
        let result = match body {
            Some((b, ty)) => req.set("Content-Type", ty).send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let code = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .flat_map(|n| {
                resp.all(&n)
                    .into_iter()
                    .map(|v| (n.clone(), v.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(64 << 20)
            .read_to_end(&mut bytes)
            .expect("read body");
        Reply {
            code,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            bytes,
            headers,
        }
    }

    /// A POST that announces `length` bytes of body and sends none: what the
    /// server answers from the headers alone (an oversize upload is refused
    /// before it is read).
    pub fn post_announcing(&self, path: &str, length: usize) -> Reply {
        use std::io::Write;
        let host = self.url.trim_start_matches("http://");
        let mut tcp = std::net::TcpStream::connect(host).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {}\r\nX-CSRF-Token: {}\r\nContent-Type: image/jpeg\r\nContent-Length: {length}\r\n\r\n",
            self.cookie.clone().unwrap_or_default(),
            self.csrf.clone().unwrap_or_default()
        );
        tcp.write_all(head.as_bytes()).expect("send headers");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        // Up to the end of the answer's body (it has a Content-Length).
        loop {
            match tcp.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&raw).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok());
                if len.is_some_and(|n| body.len() >= n) {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status code");
        Reply {
            code,
            body: serde_json::from_str(body).unwrap_or(Value::Null),
            bytes: body.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, &[])
    }

    /// A POST with the session's CSRF token.
    pub fn post(&self, path: &str, body: &[u8], content_type: &str) -> Reply {
        let csrf = self.csrf.clone().unwrap_or_default();
        self.send(
            "POST",
            path,
            Some((body, content_type)),
            &[("X-CSRF-Token", &csrf)],
        )
    }

    pub fn post_json(&self, path: &str, v: &Value) -> Reply {
        self.post(path, v.to_string().as_bytes(), "application/json")
    }

    /// A POST with other headers and no CSRF token unless given.
    pub fn post_with(&self, path: &str, v: &Value, headers: &[(&str, &str)]) -> Reply {
        self.send(
            "POST",
            path,
            Some((v.to_string().as_bytes(), "application/json")),
            headers,
        )
    }

    /// Log in; keeps the session cookie and CSRF token. The answer.
    pub fn login(&mut self, password: &str) -> Reply {
        let r = self.send(
            "POST",
            "/api/login",
            Some((
                json!({ "password": password }).to_string().as_bytes(),
                "application/json",
            )),
            &[],
        );
        if r.code == 200 {
            let set = r.header("set-cookie").expect("a session cookie");
            self.cookie = set.split(';').next().map(str::to_string);
            self.csrf = r.body["data"]["csrf"].as_str().map(str::to_string);
        }
        r
    }

    /// An operation of classifier `name`; the answer must be ok: its data.
    pub fn ok(&self, name: &str, op: &str, body: Value) -> Value {
        let r = self.post_json(&format!("/api/classifiers/{name}/{op}"), &body);
        assert_eq!(r.code, 200, "{op}: {:?}", r.body);
        assert_eq!(r.body["status"], "ok", "{op}: {:?}", r.body);
        r.body["data"].clone()
    }

    /// How many samples classifier `name` has.
    pub fn samples(&self, name: &str) -> usize {
        let r = self.get(&format!("/api/classifiers/{name}/samples"));
        assert_eq!(r.code, 200, "{:?}", r.body);
        r.body["data"]["samples"].as_array().map_or(0, Vec::len)
    }
}

/// A broker and a daemon whose console password is [`PASSWORD`], with `extra`
/// configuration; a logged-in console and an MQTT client.
async fn start_with_console(
    extra: &str,
) -> (Mosquitto, tempfile::TempDir, Process, Console, Client) {
    let (broker, dir, daemon, c) = crate::harness::start_daemon_prepared(extra, set_password).await;
    let mut console = Console::of(&daemon);
    assert_eq!(console.login(PASSWORD).code, 200);
    (broker, dir, daemon, console, c)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_needs_a_login_and_a_csrf_token_and_limits_wrong_passwords() {
    let (_broker, dir, daemon, _c) = start_daemon("").await;
    let config = dir.path().join("edgehead.toml");
    let generated = daemon
        .log_text()
        .split("password=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(str::to_string)
        .expect("the generated password is logged once");
    let mut console = Console::of(&daemon);
    // The page loads without a session, with a policy that allows only itself.
    let page = console.get("/");
    assert_eq!(page.code, 200);
    assert!(page
        .header("content-security-policy")
        .is_some_and(|p| p.contains("default-src 'self'")));
    // Nothing that sees the camera or the samples, or changes state.
    for path in [
        "/api/status",
        "/api/frame.jpg",
        "/api/live.mjpeg",
        "/api/events",
        "/api/ops/classifiers",
        "/api/classifiers/default/samples",
        "/api/classifiers/default/samples/1.jpg",
    ] {
        assert_eq!(console.get(path).code, 401, "{path}");
    }
    let label = json!({"label": "hat"});
    assert_eq!(
        console
            .post_json("/api/classifiers/default/label_frame", &label)
            .code,
        401
    );
    let session = console.get("/api/session");
    assert_eq!(session.body["authenticated"], false);
    assert_eq!(session.body["login_required"], true);

    let r = console.login(&generated);
    assert_eq!(r.code, 200, "{:?}", r.body);
    let cookie = r.header("set-cookie").expect("cookie").to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "no Secure flag over plain HTTP: {cookie}"
    );
    assert_eq!(console.get("/api/status").code, 200);
    let frame = console.get("/api/frame.jpg");
    assert_eq!(frame.code, 200);
    assert_eq!(&frame.bytes[..2], &[0xff, 0xd8], "a JPEG");

    // A state change without the session's CSRF token, or from another site.
    let cookie_only = [("Cookie", console.cookie.clone().expect("cookie"))];
    let no_token: Vec<(&str, &str)> = cookie_only.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = console.post_with("/api/classifiers/default/label_frame", &label, &no_token);
    assert_eq!(r.code, 403, "{:?}", r.body);
    let csrf = console.csrf.clone().expect("csrf");
    let cross = [
        no_token[0],
        ("X-CSRF-Token", csrf.as_str()),
        ("Origin", "http://evil.example"),
    ];
    assert_eq!(
        console
            .post_with("/api/classifiers/default/label_frame", &label, &cross)
            .code,
        403
    );
    assert_eq!(
        console.samples("default"),
        0,
        "refused requests stored nothing"
    );
    console.ok("default", "label_frame", label.clone());
    assert_eq!(console.samples("default"), 1);

    // `set-password`: a short one is refused; a new one ends the old sessions.
    let cfg = config.to_str().expect("utf8");
    let (code, _, err) = run_cli_stdin(&["--config", cfg, "set-password", "--stdin"], "short\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 10 characters"), "{err}");
    let (code, out, err) = run_cli_stdin(
        &["--config", cfg, "set-password", "--stdin"],
        "a new long password\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    let file = dir.path().join("state/console.password");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)
        .expect("password file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!std::fs::read_to_string(&file)
        .expect("read")
        .contains("a new long password"));
    assert_eq!(
        console.get("/api/status").code,
        401,
        "the old session ended"
    );
    assert_eq!(
        console.login(&generated).code,
        401,
        "the old password is gone"
    );
    assert_eq!(console.login("a new long password").code, 200);

    // Wrong passwords: five are answered, then the address waits (even with the
    // right password); a session already open keeps working.
    let mut other = Console::of(&daemon);
    for _ in 0..4 {
        assert_eq!(other.login("guess").code, 401);
    }
    let limited = other.login("guess");
    assert_eq!(limited.code, 429, "{:?}", limited.body);
    assert!(limited
        .header("retry-after")
        .is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)));
    assert_eq!(other.login("a new long password").code, 429);
    assert_eq!(console.get("/api/status").code, 200);
    let out = console.post_json("/api/logout", &json!({}));
    assert_eq!(out.code, 200);
    assert_eq!(console.get("/api/status").code, 401, "logged out");
}

/// Run the binary with `stdin`; (exit code, stdout, stderr).
fn run_cli_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::harness::bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run edgehead");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_json_and_names_are_refused_with_nothing_stored() {
    let (_broker, dir, _daemon, console, _c) =
        start_with_console("[learn]\nmax_image_bytes = 300000\n").await;
    let state = dir.path().join("state");
    let before = files(&state);
    let hat = fixture_bytes("hat-1.jpg");
    let refusals: Vec<(&str, Reply, u16)> = vec![
        // Over the upload limit: refused before it is read.
        (
            "oversize image",
            console.post_announcing("/api/classifiers/default/add_sample/hat", 700_000),
            413,
        ),
        // Within the transport's limit, over learn.max_image_bytes.
        (
            "image over max_image_bytes",
            console.post(
                "/api/classifiers/default/add_sample/hat",
                &vec![0xffu8; 350_000],
                "image/jpeg",
            ),
            400,
        ),
        (
            "not an image",
            console.post(
                "/api/classifiers/default/add_sample/hat",
                b"GIF89a not a picture",
                "image/gif",
            ),
            400,
        ),
        (
            "truncated JPEG",
            console.post(
                "/api/classifiers/default/add_sample/hat",
                &hat[..hat.len() / 2],
                "image/jpeg",
            ),
            400,
        ),
        (
            "classify: not an image",
            console.post(
                "/api/classifiers/default/classify",
                &[0x89, b'P', b'N', b'G'],
                "image/png",
            ),
            400,
        ),
        (
            "JSON over 64 KiB",
            console.post_json(
                "/api/classifiers/default/label_frame",
                &json!({"label": "x".repeat(70_000)}),
            ),
            413,
        ),
        (
            "malformed JSON",
            console.post(
                "/api/classifiers/default/label_frame",
                b"{\"label\": ",
                "application/json",
            ),
            400,
        ),
        (
            "unknown field",
            console.post_json(
                "/api/classifiers/default/label_frame",
                &json!({"label": "hat", "rm": "-rf"}),
            ),
            400,
        ),
        (
            "a state change asked with GET",
            console.get("/api/classifiers/default/reset?confirm=true"),
            405,
        ),
        (
            "label with a slash",
            console.post(
                "/api/classifiers/default/add_sample/..%2F..%2Fetc",
                &hat,
                "image/jpeg",
            ),
            400,
        ),
        (
            "label that is a dot path",
            console.post_json(
                "/api/classifiers/default/add_sample",
                &json!({"label": "..", "image": b64(&hat)}),
            ),
            400,
        ),
        (
            "label with a leading dot",
            console.post(
                "/api/classifiers/default/add_sample/.hidden",
                &hat,
                "image/jpeg",
            ),
            400,
        ),
        (
            "classifier name with a slash",
            console.post_json("/api/ops/create_classifier", &json!({"name": "../../etc"})),
            400,
        ),
        (
            "classifier name that is a dot path",
            console.post_json("/api/ops/create_classifier", &json!({"name": ".."})),
            400,
        ),
        (
            "rename to a path",
            console.post_json(
                "/api/ops/rename_classifier",
                &json!({"from": "default", "to": "a/b"}),
            ),
            400,
        ),
        (
            "unknown classifier path",
            console.get("/api/classifiers/..%2F..%2Fetc/classes"),
            404,
        ),
        (
            "sample image outside the store",
            console.get("/api/classifiers/default/samples/..%2Fconsole.password"),
            404,
        ),
        (
            "asset outside the page",
            console.get("/assets/..%2F..%2FCargo.toml"),
            404,
        ),
        (
            "manager op on a classifier",
            console.get("/api/ops/samples"),
            404,
        ),
    ];
    for (what, r, code) in &refusals {
        assert_eq!(r.code, *code, "{what}: {:?}", r.body);
        if r.code != 404 || r.body.is_object() {
            assert_eq!(
                r.body["status"], "error",
                "{what}: an answer in the envelope: {:?}",
                r.body
            );
            assert!(!r.error().is_empty(), "{what}: a reason");
        }
    }
    assert!(
        refusals[1].1.error().contains("max_image_bytes"),
        "{:?}",
        refusals[1].1.body
    );
    assert!(
        refusals[6].1.error().contains("not valid JSON"),
        "{:?}",
        refusals[6].1.body
    );
    assert!(
        refusals[9].1.error().contains("label"),
        "{:?}",
        refusals[9].1.body
    );
    // Nothing stored, nothing left behind, and the console still works.
    assert_eq!(console.samples("default"), 0);
    let list = console.get("/api/ops/classifiers");
    assert_eq!(
        list.body["data"]["classifiers"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(files(&state), before, "no file was written or left behind");
    console.ok(
        "default",
        "add_sample",
        json!({"label": "hat", "image": b64(&hat)}),
    );
    assert_eq!(console.samples("default"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_and_http_answer_the_same_request_the_same_way_and_run_time_classifiers_survive_a_restart(
) {
    let (broker, dir, mut daemon, console, mut c) = start_with_console("").await;
    let hat = b64(&fixture_bytes("hat-1.jpg"));
    // The same refusal, word for word.
    let bad = json!({"label": "", "image": hat});
    let over_mqtt = c.request(BASE, "add_sample", bad.clone()).await;
    let mut with_t = bad.clone();
    with_t["transaction"] = over_mqtt["transaction"].clone();
    let over_http = console.post_json("/api/classifiers/default/add_sample", &with_t);
    assert_eq!(over_http.code, 400);
    assert_eq!(over_http.body, over_mqtt, "same envelope, same error");
    // One request by both routes with one transaction: carried out once, answered
    // twice the same.
    let body = json!({"label": "hat", "image": hat, "transaction": "both-routes-1"});
    let first = console.post_json("/api/classifiers/default/add_sample", &body);
    assert_eq!(first.code, 200, "{:?}", first.body);
    let again = c
        .request_with(BASE, "add_sample", body.clone(), "both-routes-1")
        .await;
    assert_eq!(again, first.body);
    assert_eq!(console.samples("default"), 1);
    // Reading operations answer the same data.
    let classes = c.request(BASE, "classes", json!({})).await;
    let http_classes = console.get("/api/classifiers/default/classes");
    assert_eq!(http_classes.body["data"], classes["data"]);
    let unknown = c.request(BASE, "frobnicate", json!({})).await;
    let http_unknown = console.post_json("/api/classifiers/default/frobnicate", &json!({}));
    assert_eq!(http_unknown.code, 404);
    assert_eq!(
        http_unknown.error(),
        unknown["error"].as_str().expect("error")
    );

    // A classifier created, edited and renamed over HTTP ...
    let region = json!({"x": 0.25, "y": 0.1, "width": 0.5, "height": 0.6});
    let created = console.post_json(
        "/api/ops/create_classifier",
        &json!({"name": "shelf", "region": region}),
    );
    assert_eq!(created.code, 200, "{:?}", created.body);
    let trigger = json!({"every_frame": false, "on_change": true, "change_threshold": 12.0,
        "interval_secs": 30.0, "max_age_secs": 120.0});
    let r = console.post_json(
        "/api/ops/update_classifier",
        &json!({"name": "shelf", "trigger": trigger}),
    );
    assert_eq!(r.code, 200, "{:?}", r.body);
    console.ok("shelf", "label_frame", json!({"label": "empty"}));
    let r = console.post_json(
        "/api/ops/rename_classifier",
        &json!({"from": "shelf", "to": "pantry"}),
    );
    assert_eq!(r.code, 200, "{:?}", r.body);
    let before = console.get("/api/ops/classifiers").body["data"].clone();
    // ... is there after a restart, with its samples, as MQTT lists it too.
    daemon.terminate(30);
    let config = dir.path().join("edgehead.toml");
    let daemon = Process::start(&config);
    c.wait_for(&format!("{BASE}/availability"), 60, |m| {
        m.text() == "online"
    })
    .await;
    let mut console = Console::of(&daemon);
    assert_eq!(console.login(PASSWORD).code, 200);
    let after = console.get("/api/ops/classifiers").body["data"].clone();
    assert_eq!(after, before);
    let pantry = after["classifiers"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == "pantry"))
        .expect("pantry survives the restart");
    assert_eq!(pantry["region"]["x"], 0.25);
    assert_eq!(pantry["trigger"]["change_threshold"], 12.0);
    assert_eq!(console.samples("pantry"), 1);
    let listed = c.request(BASE, "classifiers", json!({})).await;
    assert_eq!(listed["data"], after);
    // `print-config` shows the effective list.
    let (code, out, err) =
        crate::harness::run_cli(&["--config", config.to_str().expect("utf8"), "print-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("#   pantry (created)") && out.contains("name = \"pantry\""),
        "{out}"
    );
    drop(broker);
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_operations_are_refused_over_mqtt_and_the_console_alike() {
    let (_broker, dir, _daemon, console, mut c) = start_with_console(
        "\n[learn]\ndisabled_operations = [\"reset\", \"delete_class\", \"delete_classifier\"]\n",
    )
    .await;
    let hat = b64(&fixture_bytes("hat-1.jpg"));
    let r = c
        .request(BASE, "add_sample", json!({"label": "hat", "image": hat}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let over_mqtt = c.request(BASE, "reset", json!({"confirm": true})).await;
    assert!(
        over_mqtt["error"]
            .as_str()
            .is_some_and(|e| e.contains("learn.disabled_operations")),
        "{over_mqtt}"
    );
    for (path, body) in [
        ("/api/classifiers/default/reset", json!({"confirm": true})),
        (
            "/api/classifiers/default/delete_class",
            json!({"label": "hat"}),
        ),
        (
            "/api/ops/delete_classifier",
            json!({"name": "default", "confirm": true}),
        ),
    ] {
        let r = console.post_json(path, &body);
        assert_eq!(r.code, 403, "{path}: {:?}", r.body);
        assert!(r.error().contains("turned off"), "{path}: {:?}", r.body);
    }
    assert_eq!(console.samples("default"), 1);
    // A name that is no operation is a configuration error.
    let config = dir.path().join("edgehead.toml");
    crate::harness::edit_config(&config, |t| t.replace("\"reset\"", "\"rest\""));
    crate::harness::assert_exit_2(
        &config,
        "check-config",
        &["learn.disabled_operations", "\"rest\""],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_classifier_downloads_as_a_bundle_and_uploads_as_a_new_one() {
    let (_broker, _dir, daemon, console, mut c) = start_with_console("").await;
    crate::harness::teach_hat_and_shoes(&mut c).await;
    // Without a login nothing is read or imported; without the CSRF token
    // nothing is imported.
    let anonymous = Console::of(&daemon);
    assert_eq!(anonymous.get("/api/classifiers/default/bundle").code, 401);
    assert_eq!(
        anonymous
            .post("/api/bundles", b"x", "application/gzip")
            .code,
        401
    );
    let cookie = console.cookie.clone().expect("cookie");
    let no_token = console.post_with("/api/bundles?as=x", &json!({}), &[("Cookie", &cookie)]);
    assert_eq!(no_token.code, 403, "{:?}", no_token.body);
    let file = console.get("/api/classifiers/default/bundle");
    assert_eq!(file.code, 200, "{:?}", file.body);
    assert_eq!(file.header("content-type"), Some("application/gzip"));
    assert!(
        file.header("content-disposition")
            .is_some_and(|d| d.contains("default.edgehead.tar.gz")),
        "{:?}",
        file.headers
    );
    assert_eq!(console.get("/api/classifiers/nope/bundle").code, 404);
    let bad_mode = console.post("/api/bundles?mode=bogus", &file.bytes, "application/gzip");
    assert_eq!(bad_mode.code, 400, "{:?}", bad_mode.body);
    let taken = console.post("/api/bundles?as=copy", &file.bytes, "application/gzip");
    assert_eq!(taken.code, 200, "{:?}", taken.body);
    assert_eq!(taken.body["data"]["added"], 2, "{:?}", taken.body);
    assert_eq!(console.samples("copy"), 2);
    // Not a bundle: refused, nothing new.
    let junk = console.post("/api/bundles?as=junk", b"not a bundle", "application/gzip");
    assert_eq!(junk.code, 400, "{:?}", junk.body);
    assert!(junk.error().contains("bundle refused"), "{:?}", junk.body);
    let list = console.get("/api/ops/classifiers");
    assert_eq!(
        list.body["data"]["classifiers"].as_array().map(Vec::len),
        Some(2)
    );
}
