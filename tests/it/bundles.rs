//! Bundles with the real daemon: export beside a running daemon, import into a
//! running one over MQTT, refusals that change nothing, and an offline merge.

use serde_json::json;

use crate::harness::*;

/// Wait until classifier `base`'s head knows `classes` (sorted).
async fn wait_for_head(c: &mut Client, base: &str, classes: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = c.request(base, "head", json!({})).await;
        let mut got: Vec<String> = r["data"]["classes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        got.sort();
        if got == classes {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "head of {base}: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_classifier_exported_beside_a_running_daemon_imports_into_another_and_predicts_alike() {
    // Board A: teach two classes, export while it runs.
    let (_ba, dir_a, _da, mut a) = start_daemon("").await;
    teach_hat_and_shoes(&mut a).await;
    wait_for_head(&mut a, BASE, &["hat", "shoes"]).await;
    let file = dir_a.path().join("default.bundle");
    let config_a = dir_a.path().join("edgehead.toml");
    let (code, out, err) = run_cli(&[
        "--config",
        config_a.to_str().expect("utf-8"),
        "export",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 samples in 2 classes"), "{out}");
    let bundle = std::fs::read(&file).expect("bundle written");

    // Board B: import over MQTT under another name.
    let (_bb, dir_b, mut db, mut b) = start_daemon("").await;
    let porch = format!("{BASE}/porch");
    let r = b
        .request(
            BASE,
            "import_bundle",
            json!({"bundle": b64(&bundle), "as": "porch"}),
        )
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(
        (r["data"]["added"].as_u64(), r["data"]["classes"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    wait_for_head(&mut b, &porch, &["hat", "shoes"]).await;
    // Both boards classify the same image alike.
    let image = b64(&fixture_bytes("shoes-2.jpg"));
    let on_a = a.request(BASE, "classify", json!({"image": image})).await;
    let on_b = b.request(&porch, "classify", json!({"image": image})).await;
    let ranked = |v: &serde_json::Value| -> Vec<String> {
        v["data"]["top"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["label"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        on_a["data"]["label"], on_b["data"]["label"],
        "{on_a} {on_b}"
    );
    assert_eq!(ranked(&on_a), ranked(&on_b), "{on_a} {on_b}");
    assert_eq!(
        ranked(&on_b).first().map(String::as_str),
        Some("shoes"),
        "{on_b}"
    );

    // The same name again is refused; a damaged bundle is refused; nothing changed.
    let again = b
        .request(
            BASE,
            "import_bundle",
            json!({"bundle": b64(&bundle), "as": "porch"}),
        )
        .await;
    assert_eq!(again["status"], "error", "{again}");
    assert!(
        again["error"].as_str().unwrap_or("").contains("merge"),
        "{again}"
    );
    let cut = &bundle[..bundle.len() / 2];
    let damaged = b
        .request(
            BASE,
            "import_bundle",
            json!({"bundle": b64(cut), "mode": "replace", "as": "porch"}),
        )
        .await;
    assert_eq!(damaged["status"], "error", "{damaged}");
    assert!(
        damaged["error"]
            .as_str()
            .unwrap_or("")
            .contains("bundle refused"),
        "{damaged}"
    );
    let head = b.request(&porch, "head", json!({})).await;
    assert_eq!(head["data"]["samples"].as_u64(), Some(2), "{head}");
    let list = b.request(BASE, "classifiers", json!({})).await;
    assert_eq!(
        list["data"]["classifiers"].as_array().map(Vec::len),
        Some(2),
        "{list}"
    );

    // Stopped, a merge of the same bundle adds nothing new.
    db.terminate(20);
    let config_b = dir_b.path().join("edgehead.toml");
    let (code, out, err) = run_cli(&[
        "--config",
        config_b.to_str().expect("utf-8"),
        "import",
        file.to_str().expect("utf-8"),
        "--as",
        "porch",
        "--merge",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 samples added (2 already there, skipped), 2 in 2 classes"),
        "{out}"
    );
    // No staging directory is left behind.
    let left: Vec<String> = std::fs::read_dir(dir_b.path().join("state/classifiers"))
        .expect("classifiers")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn while_an_unfinished_change_waits_for_the_next_start_the_set_is_not_changed() {
    // An import whose journaled move failed leaves the journal for the next
    // start, which saves the definitions it holds: a change made meanwhile
    // would be lost, so it is refused until then.
    let (_broker, dir, mut daemon, mut c) = start_daemon("").await;
    let journal = dir.path().join("state/classifiers.journal");
    std::fs::write(
        &journal,
        r#"{"from": ".import-0", "to": "porch", "replace": true, "runtime": {}}"#,
    )
    .expect("journal");
    let create = json!({"name": "door"});
    let r = c.request(BASE, "create_classifier", create.clone()).await;
    assert_eq!(r["status"], "error", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("restart edgehead"),
        "{r}"
    );
    let list = c.request(BASE, "classifiers", json!({})).await;
    assert_eq!(list["status"], "ok", "{list}");
    // The next start finishes it; then the set changes again.
    daemon.terminate(20);
    let config = dir.path().join("edgehead.toml");
    let _daemon = Process::start(&config);
    c.wait_for(&format!("{BASE}/availability"), 60, |m| {
        m.text() == "online"
    })
    .await;
    assert!(!journal.exists(), "the journal was finished");
    let r = c.request(BASE, "create_classifier", create).await;
    assert_eq!(r["status"], "ok", "{r}");
}
