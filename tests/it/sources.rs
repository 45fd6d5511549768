//! Frame sources with real programs: the `command` source running ffmpeg.

use std::time::Duration;

use crate::harness::{config_file, edit_config, wait_until, Client, Mosquitto, Process};

const BASE: &str = "edgehead/it";

/// A daemon config whose source is `program args…`; `marker` is a unique string
/// among the arguments, to find the program's processes.
fn command_config(
    dir: &std::path::Path,
    port: u16,
    program: &str,
    args: &[&str],
    extra: &str,
) -> std::path::PathBuf {
    let config = config_file(dir, port, "");
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    edit_config(&config, |t| {
        t.replace("kind = \"files\"", "kind = \"command\"")
            + &format!(
                "\n[source.command]\nprogram = {program:?}\nargs = [{}]\nrestart_min_ms = 100\nrestart_max_ms = 1000\n{extra}",
                args.join(", ")
            )
    });
    config
}

/// ffmpeg generating a 320×240 test pattern at 5 fps, as MJPEG on its stdout.
fn ffmpeg_args(marker: &str) -> Vec<String> {
    [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=5",
        "-metadata",
        marker,
        "-f",
        "mjpeg",
        "-q:v",
        "5",
        "pipe:1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Frames flow: a prediction within `first_secs`, then a later one within 30 s.
async fn predictions_flow(c: &mut Client, first_secs: u64) {
    // The first frame is classified; later ones of a static scene may be skipped
    // by the change gate, so the flow of frames is read from the status counters.
    c.wait_for(&format!("{BASE}/default/prediction"), first_secs, |_| true)
        .await;
    let inferred = |m: &crate::harness::Msg| m.json()["stats"]["frames_inferred"].as_u64();
    let n = inferred(
        &c.wait_for(&format!("{BASE}/status"), 30, |m| inferred(m).is_some())
            .await,
    );
    c.wait_for(&format!("{BASE}/status"), 30, |m| inferred(m) > n)
        .await;
}

/// Pids of processes whose command line holds `marker`.
fn pids_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(marker) {
                pids.push(pid);
            }
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread")]
async fn ffmpeg_frames_flow_a_killed_ffmpeg_is_restarted_and_nothing_outlives_the_daemon() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("comment=edgehead-it-{}", fastrand::u64(..));
    let args = ffmpeg_args(&marker);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = command_config(dir.path(), broker.port, "ffmpeg", &args, "");
    let mut c = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    let mut daemon = Process::start(&config);
    let p = c
        .wait_for(&format!("{BASE}/default/prediction"), 60, |_| true)
        .await
        .json();
    assert!(p["embedding_norm"].as_f64() > Some(1.0), "{p}");
    let first = pids_with(&marker);
    assert_eq!(first.len(), 1, "one ffmpeg: {first:?}");

    // ffmpeg dies: the source says so and starts it again; frames flow again.
    std::process::Command::new("kill")
        .args(["-KILL", &first[0].to_string()])
        .status()
        .expect("kill");
    let s = c
        .wait_for(&format!("{BASE}/status"), 30, |m| {
            m.json()["source"]["state"] == "reconnecting"
        })
        .await
        .json();
    let error = s["source"]["error"].as_str().expect("error");
    assert!(error.contains("ffmpeg"), "{s}");
    c.wait_for(&format!("{BASE}/status"), 30, |m| {
        m.json()["source"]["state"] == "running"
    })
    .await;
    predictions_flow(&mut c, 30).await;
    let second = pids_with(&marker);
    assert!(
        second.len() == 1 && second != first,
        "{first:?} then {second:?}"
    );

    // SIGTERM: the daemon stops its program.
    daemon.terminate(30);
    assert!(pids_with(&marker).is_empty(), "ffmpeg outlived SIGTERM");

    // kill -9: the program goes too (parent-death signal).
    let _daemon = Process::start(&config);
    assert!(wait_until(30, || pids_with(&marker).len() == 1));
    let mut daemon = _daemon;
    daemon.signal("KILL");
    let _ = daemon.wait(10);
    assert!(
        wait_until(5, || pids_with(&marker).is_empty()),
        "ffmpeg outlived kill -9 of the daemon"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_failing_program_is_reported_and_retried_with_backoff() {
    let broker = Mosquitto::start();
    for (program, expect) in [
        ("edgehead-no-such-camera-program", "cannot start"),
        ("false", "exited"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = command_config(dir.path(), broker.port, program, &[], "");
        let mut c = Client::connect(broker.port, &[&format!("{BASE}/status")]).await;
        let daemon = Process::start(&config);
        let s = c
            .wait_for(&format!("{BASE}/status"), 60, |m| {
                let s = m.json();
                s["source"]["state"] == "reconnecting"
                    && s["source"]["error"]
                        .as_str()
                        .is_some_and(|e| e.contains(expect))
            })
            .await
            .json();
        assert!(
            s["source"]["retry_in_ms"].as_u64() > Some(0),
            "{program}: {s}"
        );
        // Backoff from 100 ms doubling to 1 s: about 8 attempts in 5 s, not a tight loop.
        std::thread::sleep(Duration::from_secs(5));
        let log = daemon.log_text();
        let attempts = log.matches("frame source failed").count();
        assert!(
            (2..=15).contains(&attempts),
            "{program}: {attempts} attempts in about 5 s"
        );
        drop(daemon);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_program_that_sends_no_frame_is_starting_not_running() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // Up, and silent: no frame ever decodes.
    let config = command_config(dir.path(), broker.port, "sleep", &["60"], "");
    let mut c = Client::connect(broker.port, &[&format!("{BASE}/status")]).await;
    let _daemon = Process::start(&config);
    // Statuses come every second: five of them, none says running.
    for _ in 0..5 {
        let s = c
            .wait_for(&format!("{BASE}/status"), 60, |_| true)
            .await
            .json();
        assert_eq!(s["source"]["state"], "starting", "{s}");
        assert_eq!(s["stats"]["frames_captured"], 0, "{s}");
    }
}

fn http_config(dir: &std::path::Path, port: u16, http: &str) -> std::path::PathBuf {
    let config = config_file(dir, port, "");
    edit_config(&config, |t| {
        t.replace("kind = \"files\"", "kind = \"http\"")
            + &format!(
                "\n[source.http]\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\nconnect_timeout_ms = 2000\nread_timeout_ms = 1500\n{http}"
            )
    });
    config
}

fn fixture_frames() -> Vec<Vec<u8>> {
    ["hat-1.jpg", "shoes-1.jpg", "pants-1.jpg"]
        .iter()
        .map(|n| std::fs::read(crate::harness::fixtures().join(n)).expect("fixture"))
        .collect()
}

/// Wait for a status whose source state is `state` and whose error (if any)
/// contains `needle`.
async fn wait_source(c: &mut Client, state: &str, needle: &str) -> serde_json::Value {
    c.wait_for(&format!("{BASE}/status"), 60, |m| {
        let s = m.json();
        s["source"]["state"] == state
            && (needle.is_empty()
                || s["source"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(needle)))
    })
    .await
    .json()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_mjpeg_stream_with_digest_auth_flows_and_survives_a_dropped_connection() {
    use crate::httpcam::{Auth, Camera};
    let cam = Camera::start(fixture_frames(), 5.0, Auth::Digest("admin", "s3cret"), true);
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = http_config(
        dir.path(),
        broker.port,
        &format!(
            "url = \"{}\"\nusername = \"admin\"\npassword = \"s3cret\"\n",
            cam.url("/stream")
        ),
    );
    let mut c = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    let _daemon = Process::start(&config);
    c.wait_for(&format!("{BASE}/default/prediction"), 60, |_| true)
        .await;
    // The first connection is cut in the middle of a frame; the source reconnects
    // and frames flow again.
    wait_source(&mut c, "reconnecting", "").await;
    predictions_flow(&mut c, 30).await;
    assert!(cam.streams.load(std::sync::atomic::Ordering::Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_snapshots_flow_with_and_without_basic_auth_and_a_wrong_password_is_reported() {
    use crate::httpcam::{Auth, Camera};
    let open = Camera::start(fixture_frames(), 5.0, Auth::None, false);
    let locked = Camera::start(fixture_frames(), 5.0, Auth::Basic("admin", "s3cret"), false);
    let broker = Mosquitto::start();
    for (cam, credentials, ok) in [
        (&open, "", true),
        (
            &locked,
            "username = \"admin\"\npassword = \"s3cret\"\n",
            true,
        ),
        (
            &locked,
            "username = \"admin\"\npassword = \"wrong\"\n",
            false,
        ),
        (&locked, "", false),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = http_config(
            dir.path(),
            broker.port,
            &format!(
                "url = \"{}\"\nmode = \"snapshot\"\ninterval_ms = 200\n{credentials}",
                cam.url("/snapshot")
            ),
        );
        let mut c = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
        let daemon = Process::start(&config);
        if ok {
            predictions_flow(&mut c, 60).await;
        } else {
            let needle = if credentials.is_empty() {
                "needs a username and password"
            } else {
                "refused the username or password"
            };
            let s = wait_source(&mut c, "reconnecting", needle).await;
            assert!(s["source"]["retry_in_ms"].as_u64() > Some(0), "{s}");
        }
        drop(daemon);
    }
    assert!(locked.refused.load(std::sync::atomic::Ordering::Relaxed) >= 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_snapshots_trust_the_configured_ca_and_refuse_an_unknown_one() {
    use crate::httpcam::Camera;
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = crate::harness::make_certificates(certs.path(), "cam");
    let cam = Camera::start_tls(fixture_frames(), &cert, &key);
    let url = cam.url("/snapshot").replace("http://", "https://");
    let broker = Mosquitto::start();
    for (ca_file, ok) in [(Some(&ca), true), (None, false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_line = ca_file
            .map(|p| format!("ca_file = \"{}\"\n", p.display()))
            .unwrap_or_default();
        let config = http_config(
            dir.path(),
            broker.port,
            &format!("url = \"{url}\"\nmode = \"snapshot\"\ninterval_ms = 200\n{ca_line}"),
        );
        let mut c = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
        let daemon = Process::start(&config);
        if ok {
            c.wait_for(&format!("{BASE}/default/prediction"), 60, |_| true)
                .await;
        } else {
            // The system's CAs do not know the test CA.
            let s = wait_source(&mut c, "reconnecting", "").await;
            let e = s["source"]["error"].as_str().expect("error").to_lowercase();
            assert!(e.contains("certificate") || e.contains("issuer"), "{s}");
        }
        drop(daemon);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_camera_that_never_answers_hits_the_read_timeout() {
    use crate::httpcam::{Auth, Camera};
    let cam = Camera::start(fixture_frames(), 5.0, Auth::None, false);
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = http_config(
        dir.path(),
        broker.port,
        &format!(
            "url = \"{}\"\n",
            cam.url("/hang")
                .replace("http://", "http://viewer:topsecret@")
        ),
    );
    let mut c = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    let _daemon = Process::start(&config);
    let s = wait_source(&mut c, "reconnecting", "").await;
    let error = s["source"]["error"].as_str().expect("error").to_lowercase();
    assert!(
        error.contains("timed out") || error.contains("timeout"),
        "{s}"
    );
    // A password in the URL is not shown.
    assert!(!s.to_string().contains("topsecret"), "{s}");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_between_the_frames_of_a_program_is_skipped() {
    // A program that writes chatter, a stray SOI, and a JPEG, five times a second.
    let jpeg = crate::harness::fixtures().join("hat-1.jpg");
    let script = format!(
        "import sys, time\nd = open({:?}, 'rb').read()\nwhile True:\n    sys.stdout.buffer.write(b'noise \\xff\\xd8\\x00 more noise\\n' + d)\n    sys.stdout.buffer.flush()\n    time.sleep(0.2)\n",
        jpeg.display().to_string()
    );
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = command_config(dir.path(), broker.port, "python3", &["-c", &script], "");
    let mut c = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    let _daemon = Process::start(&config);
    c.wait_for(&format!("{BASE}/default/prediction"), 60, |_| true)
        .await;
    let s = c
        .wait_for(&format!("{BASE}/status"), 30, |m| {
            m.json()["stats"]["frames_inferred"].as_u64() >= Some(3)
        })
        .await
        .json();
    assert_eq!(s["source"]["state"], "running", "{s}");
    assert_eq!(s["stats"]["frame_errors"], 0, "{s}");
}
#[tokio::test(flavor = "multi_thread")]
async fn a_synthetic_source_at_fps_0_makes_frames_as_inference_takes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::start();
    let config = config_file(dir.path(), broker.port, "");
    edit_config(&config, |t| {
        t.replace("kind = \"files\"", "kind = \"synthetic\"")
            + "\n[source.synthetic]\nwidth = 320\nheight = 240\nfps = 0.0\n"
    });
    let _daemon = Process::start(&config);
    let mut c = Client::connect(broker.port, &[&format!("{BASE}/status")]).await;
    let status = c
        .wait_for(&format!("{BASE}/status"), 60, |m| {
            m.json()["stats"]["frames_inferred"].as_u64().unwrap_or(0) >= 10
        })
        .await
        .json();
    let s = &status["stats"];
    let (captured, inferred, dropped) = (
        s["frames_captured"].as_u64().expect("captured"),
        s["frames_inferred"].as_u64().expect("inferred"),
        s["frames_dropped"].as_u64().expect("dropped"),
    );
    // One frame may wait while inference runs; none is made to be thrown away.
    assert!(dropped <= 1, "{status}");
    assert!(captured <= inferred + 2, "{status}");
}

/// Whether process `pid` runs (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            let rest = &t[t.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|s| s != "Z")
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn descendants_that_leave_the_program_s_group_do_not_outlive_it_nor_a_killed_daemon() {
    // A program that double-forks a child into a session of its own (setsid),
    // writes its pid down, and exits at once: the daemon restarts it again and
    // again. Those children must not pile up, nor survive kill -9 of the daemon
    // once it starts again, nor its stop.
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("escaped.pids");
    let script = r#"import os, sys, time
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        with open(sys.argv[1], 'a') as f:
            f.write(str(os.getpid()) + '\n')
        os.execvp('sleep', ['sleep', '300'])
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(0.2)
"#;
    let pidfile_arg = pidfile.display().to_string();
    let config = command_config(
        dir.path(),
        broker.port,
        "python3",
        &["-c", script, &pidfile_arg],
        // The escaped child keeps the program's standard output open: its end
        // is seen by the frame timeout.
        "frame_timeout_ms = 500\n",
    );
    let escaped = || -> Vec<u32> {
        std::fs::read_to_string(&pidfile)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let daemon = Process::start(&config);
    assert!(
        wait_until(30, || escaped().len() >= 5),
        "the program was not restarted: {}",
        daemon.log_text()
    );
    let running: Vec<u32> = escaped().into_iter().filter(|&p| alive(p)).collect();
    assert!(
        running.len() <= 1,
        "{} of {} escaped children still run: {running:?}",
        running.len(),
        escaped().len()
    );
    // kill -9: what runs now goes to init; the next daemon ends it.
    daemon.signal("KILL");
    drop(daemon);
    let before_restart = escaped();
    let daemon = Process::start(&config);
    assert!(
        wait_until(30, || before_restart.iter().all(|&p| !alive(p))),
        "children of the killed daemon's program still run: {:?}\n{}",
        before_restart
            .iter()
            .filter(|&&p| alive(p))
            .collect::<Vec<_>>(),
        daemon.log_text()
    );
    // And a stop leaves nothing (once the daemon runs: a SIGTERM during its
    // start-up ends it before its handler is there).
    daemon.wait_for_log("edgehead running", 60);
    let mut daemon = daemon;
    daemon.terminate(30);
    assert!(
        wait_until(10, || escaped().iter().all(|&p| !alive(p))),
        "children outlived the daemon: {:?}",
        escaped().iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
    );
}
