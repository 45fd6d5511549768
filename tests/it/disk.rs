//! A full disk: the daemon starts, says so, predicts and deletes.

use serde_json::json;

use crate::harness::{
    b64, config_file, edit_config, fixture_bytes, sample_ids, teach_hat_and_shoes, Client,
    Mosquitto, Process, BASE,
};

/// A 4 MiB tmpfs for a state directory, filled on demand; unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }

    fn fill(&self) {
        use std::io::Write;
        for (name, chunk) in [("fill", 64 << 10), ("fill-small", 512)] {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.0.path().join(name))
                .expect("create");
            while f.write_all(&vec![1u8; chunk]).is_ok() {}
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_full_disk_the_daemon_starts_says_so_predicts_and_deletes() {
    let Some(disk) = SmallDisk::mount() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and can mount a tmpfs"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), broker.port, "\n[learn]\ndebounce_ms = 50\n");
    let state = disk.0.path().join("state");
    edit_config(&config, |t| {
        t.replace(
            &format!("state_dir = \"{}\"", dir.path().join("state").display()),
            &format!("state_dir = \"{}\"", state.display()),
        )
    });
    let mut daemon = Process::start(&config);
    let mut c = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    c.wait_for(&format!("{BASE}/availability"), 60, |m| {
        m.text() == "online"
    })
    .await;
    let mark = c.mark();
    teach_hat_and_shoes(&mut c).await;
    // The head of both samples is saved before the disk fills up (one
    // retrain, or two when the samples came slower than the debounce).
    let head = c
        .wait_since(mark, &format!("{BASE}/default/head"), 30, |m| {
            m.json()["quality"]["samples"] == 2
        })
        .await
        .json()["head"]
        .clone();
    disk.fill();
    let r = c
        .request(
            BASE,
            "add_sample",
            json!({"label": "hat", "image": b64(&fixture_bytes("hat-2.jpg"))}),
        )
        .await;
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("disk is full")),
        "{r}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(state.join("classifiers/default/samples"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        4,
        "the failed add left files: {leftovers:?}"
    );
    // A restart on the full disk: it comes up (it used to exit 2), and says so.
    daemon.terminate(30);
    let _daemon = Process::start(&config);
    let status = c
        .wait_for(&format!("{BASE}/status"), 60, |m| {
            // The new daemon's (its counters start at 0), once its source runs.
            let s = m.json();
            s["disk_full"] == true
                && s["stats"]["requests"] == 0
                && s["source"]["state"] == "running"
        })
        .await
        .json();
    assert_eq!(status["head"], head, "{status}");
    c.wait_for(&format!("{BASE}/default/prediction"), 30, |m| {
        !m.json()["head"].is_null()
    })
    .await;
    // Deleting works on the full disk.
    let r = c
        .request(BASE, "delete_class", json!({"label": "shoes"}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let r = c.request(BASE, "remove_sample", json!({"id": 1})).await;
    assert_eq!(r["status"], "ok", "{r}");
    assert!(sample_ids(&mut c).await.is_empty());
}
