//! Classifiers on regions of the frame, against a real mosquitto and the real
//! backbone: regions learn their own classes from `label_frame` and publish on
//! their own topics; the change gate stops the backbone on a static scene and
//! starts it when the scene changes; recent crops become samples; a state
//! directory of the single-store layout is migrated; bad regions are refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use image::RgbImage;
use serde_json::{json, Value};

use crate::harness::{
    assert_exit_2, config_file, edit_config, fixtures, Client, Mosquitto, Process,
};

const BASE: &str = "edgehead/it";

pub(crate) fn fixture(name: &str) -> RgbImage {
    image::open(fixtures().join(name))
        .expect("fixture")
        .to_rgb8()
}

/// A 640×320 frame: `left` in the left half, `right` in the right half.
fn two_up(left: &str, right: &str) -> RgbImage {
    let mut frame = RgbImage::new(640, 320);
    for (name, x) in [(left, 0), (right, 320)] {
        let img = image::imageops::resize(
            &fixture(name),
            320,
            320,
            image::imageops::FilterType::Triangle,
        );
        image::imageops::replace(&mut frame, &img, x, 0);
    }
    frame
}

/// Replace the scene the files source replays (a rename: never half a file).
pub(crate) fn show(scene_dir: &Path, frame: &RgbImage) {
    let tmp = scene_dir.join("..").join("scene.tmp.jpg");
    frame.save(&tmp).expect("save");
    std::fs::rename(&tmp, scene_dir.join("scene.jpg")).expect("rename");
}

/// A daemon on a files source replaying one file, `scene/scene.jpg`, at 5 frames a
/// second, first showing a hat beside pants; `extra` is appended to its
/// configuration. Returns, once the daemon is online: the broker, the temporary
/// directory, the scene folder, the daemon and a client subscribed to every topic
/// of the device.
pub(crate) async fn start_on_scene(
    extra: &str,
) -> (Mosquitto, tempfile::TempDir, PathBuf, Process, Client) {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let scene = dir.path().join("scene");
    std::fs::create_dir_all(&scene).expect("mkdir");
    let config = config_file(dir.path(), broker.port, extra);
    edit_config(&config, |t| {
        t.replace(
            &fixtures().display().to_string(),
            &scene.display().to_string(),
        )
    });
    show(&scene, &two_up("hat-1.jpg", "pants-1.jpg"));
    let daemon = Process::start(&config);
    let mut c = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    online(&mut c).await;
    (broker, dir, scene, daemon, c)
}

async fn online(c: &mut Client) {
    c.wait_for(&format!("{BASE}/availability"), 60, |m| {
        m.text() == "online"
    })
    .await;
}

async fn ok(c: &mut Client, base: &str, op: &str, body: Value) -> Value {
    let r = c.request(base, op, body).await;
    assert_eq!(r["status"], "ok", "{op} on {base}: {r}");
    r["data"].clone()
}

/// The classifier's counters in the next status message that satisfies `pred`.
async fn gate_status(
    c: &mut Client,
    name: &str,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    c.wait_for(&format!("{BASE}/status"), secs, |m| {
        pred(&m.json()["classifiers"][name])
    })
    .await
    .json()["classifiers"][name]
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_classifiers_on_different_regions_learn_their_own_classes() {
    let (_broker, dir, scene, _daemon, mut c) = start_on_scene(
        r#"
[learn]
debounce_ms = 50

[[classifiers]]
name = "left"
region = { x = 0.0, y = 0.0, width = 0.5, height = 1.0 }

[[classifiers]]
name = "right"
region = { x = 320, y = 0, width = 320, height = 320, unit = "px" }
"#,
    )
    .await;
    let (left, right) = (format!("{BASE}/left"), format!("{BASE}/right"));
    // Teach each region from the frames: the left half holds hats and shoes, the
    // right half pants and nothing else.
    ok(&mut c, &left, "label_frame", json!({"label": "hat"})).await;
    ok(&mut c, &right, "label_frame", json!({"label": "pants"})).await;
    show(&scene, &two_up("shoes-1.jpg", "hat-2.jpg"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    ok(&mut c, &left, "label_frame", json!({"label": "shoes"})).await;
    ok(&mut c, &right, "label_frame", json!({"label": "not_pants"})).await;

    let l = ok(&mut c, &left, "classes", json!({})).await;
    let r = ok(&mut c, &right, "classes", json!({})).await;
    let names = |v: &Value| -> Vec<String> {
        v["classes"]
            .as_array()
            .expect("classes")
            .iter()
            .map(|c| c["label"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(names(&l), ["hat", "shoes"], "{l}");
    assert_eq!(names(&r), ["pants", "not_pants"], "{r}");
    // The device-level request topic addresses the first classifier.
    let first = ok(&mut c, BASE, "classes", json!({})).await;
    assert_eq!(names(&first), ["hat", "shoes"]);

    // Each publishes its own label for its own region on its own topic.
    show(&scene, &two_up("hat-2.jpg", "pants-2.jpg"));
    let lp = c
        .wait_for(&format!("{left}/prediction"), 60, |m| {
            m.json()["label"] == "hat" && m.json()["head"].is_string()
        })
        .await
        .json();
    assert_eq!(lp["classifier"], "left");
    let rp = c
        .wait_for(&format!("{right}/prediction"), 60, |m| {
            m.json()["label"] == "pants"
        })
        .await
        .json();
    assert_eq!(rp["classifier"], "right");
    show(&scene, &two_up("shoes-2.jpg", "shoes-1.jpg"));
    c.wait_for(&format!("{left}/prediction"), 60, |m| {
        m.json()["label"] == "shoes"
    })
    .await;
    c.wait_for(&format!("{right}/prediction"), 60, |m| {
        m.json()["label"] == "not_pants"
    })
    .await;
    // A request for a classifier that does not exist is answered, not dropped.
    let r = c
        .request(&format!("{BASE}/nope"), "classes", json!({}))
        .await;
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("no classifier \"nope\"")),
        "{r}"
    );
    // Extra topic levels are refused, and so is a label given twice, differently.
    c.publish(
        &format!("{left}/request/classes/extra"),
        json!({"transaction": "x1"}).to_string(),
    )
    .await;
    let r = c
        .wait_for(&format!("{left}/response/classes"), 30, |m| {
            m.json()["transaction"] == "x1"
        })
        .await
        .json();
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("no further topic level")),
        "{r}"
    );
    c.publish(
        &format!("{left}/request/label_frame/hat"),
        json!({"label": "shoes", "transaction": "x2"}).to_string(),
    )
    .await;
    let r = c
        .wait_for(&format!("{left}/response/label_frame"), 30, |m| {
            m.json()["transaction"] == "x2"
        })
        .await
        .json();
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("give one")),
        "{r}"
    );
    // Their stores are apart.
    assert!(dir
        .path()
        .join("state/classifiers/left/samples.json")
        .exists());
    assert!(dir
        .path()
        .join("state/classifiers/right/samples.json")
        .exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_static_scene_stops_the_backbone_and_a_change_starts_it() {
    let (_broker, _dir, scene, _daemon, mut c) = start_on_scene("").await;
    // At 5 frames a second, 3 s of the same file: one backbone run, the rest skipped.
    let s = gate_status(&mut c, "default", 30, |s| {
        s["skipped"].as_u64().unwrap_or(0) >= 12
    })
    .await;
    assert_eq!(s["backbone_runs"], 1, "{s}");
    assert_eq!(s["runs"]["first"], 1, "{s}");
    assert_eq!(s["skips"]["unchanged"], s["skipped"], "{s}");
    // The file changes: the backbone runs again, and says why.
    show(&scene, &two_up("shoes-1.jpg", "hat-2.jpg"));
    let p = c
        .wait_for(&format!("{BASE}/default/prediction"), 30, |m| {
            m.json()["trigger"] == "changed"
        })
        .await
        .json();
    assert_eq!(p["classifier"], "default");
    let s = gate_status(&mut c, "default", 30, |s| {
        s["runs"]["changed"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let runs = s["backbone_runs"].as_u64().unwrap_or(0);
    assert!((2..=3).contains(&runs), "{s}");
    // And stays still again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = gate_status(&mut c, "default", 30, |_| true).await;
    assert_eq!(later["backbone_runs"].as_u64(), Some(runs), "{later}");
}

#[tokio::test(flavor = "multi_thread")]
async fn labeling_a_recent_crop_adds_one_sample_and_retrains() {
    let (_broker, _dir, _scene, _daemon, mut c) = start_on_scene(
        r#"
[learn]
debounce_ms = 50

[[classifiers]]
name = "door"
region = { x = 0.5, y = 0.0, width = 0.5, height = 1.0 }
"#,
    )
    .await;
    let door = format!("{BASE}/door");
    // The first crop after start is kept.
    let mut list = Value::Null;
    for _ in 0..50 {
        list = ok(&mut c, &door, "recent", json!({})).await;
        if !list["recent"].as_array().expect("list").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let entry = list["recent"][0].clone();
    assert_eq!(entry["reason"], "first", "{list}");
    assert!(
        entry.get("image").is_none(),
        "images only when asked: {list}"
    );
    let id = entry["id"].as_u64().expect("id");
    let with = ok(&mut c, &door, "recent_image", json!({"id": id})).await;
    let jpeg = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        with["image"].as_str().expect("image"),
    )
    .expect("b64");
    let crop = image::load_from_memory(&jpeg).expect("jpeg").to_rgb8();
    // The crop is the region (the right half, 320×320), not the frame.
    assert_eq!(crop.dimensions(), (320, 320));

    let added = ok(
        &mut c,
        &door,
        "label_recent",
        json!({"id": id, "label": "pants"}),
    )
    .await;
    let sample = added["id"].as_u64().expect("sample id");
    let head = c
        .wait_for(&format!("{door}/head"), 30, |m| {
            m.json()["quality"]["samples"] == 1
        })
        .await
        .json();
    assert_eq!(head["classes"], json!(["pants"]), "{head}");
    let samples = ok(&mut c, &door, "samples", json!({})).await;
    assert_eq!(
        samples["samples"].as_array().map(Vec::len),
        Some(1),
        "{samples}"
    );
    assert_eq!(samples["samples"][0]["id"].as_u64(), Some(sample));
    // Labeled once: it left the list, and labeling it again is refused.
    let again = c
        .request(&door, "label_recent", json!({"id": id, "label": "pants"}))
        .await;
    assert!(
        again["error"]
            .as_str()
            .is_some_and(|e| e.contains("no recent crop")),
        "{again}"
    );
    let list = ok(&mut c, &door, "recent", json!({})).await;
    assert!(
        list["recent"]
            .as_array()
            .expect("list")
            .iter()
            .all(|e| e["id"] != id),
        "{list}"
    );
    let gone = c.request(&door, "discard_recent", json!({"id": id})).await;
    assert!(
        gone["error"]
            .as_str()
            .is_some_and(|e| e.contains("no recent crop")),
        "{gone}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_store_state_directory_is_migrated_keeping_every_sample() {
    use edgehead::backbone::BackboneId;
    use edgehead::store::{Origin, Store};
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    // The layout edgehead 0.1 writes: one store at the top of the state directory,
    // written by the same store code (embeddings of another backbone, so the
    // daemon re-embeds them from their thumbnails).
    let mut ids = Vec::new();
    {
        let (mut store, _) = Store::open(&state).expect("old store");
        let other = BackboneId::new("old".into(), "0".repeat(64), "old");
        for (label, file) in [
            ("hat", "hat-1.jpg"),
            ("hat", "hat-2.jpg"),
            ("shoes", "shoes-1.jpg"),
            ("shoes", "shoes-2.jpg"),
            ("pants", "pants-1.jpg"),
        ] {
            let jpeg = std::fs::read(fixtures().join(file)).expect("fixture");
            ids.push(
                store
                    .add(label, Origin::Image, &jpeg, &other, &[0.0; 4], None)
                    .expect("add")
                    .id,
            );
        }
        assert!(store.remove(ids[4]).expect("remove"));
        ids.pop();
    }
    assert!(state.join("samples.json").exists());
    let config = config_file(dir.path(), broker.port, "");
    let _daemon = Process::start(&config);
    let mut c = Client::connect(broker.port, &[&format!("{BASE}/#")]).await;
    online(&mut c).await;
    let head = c
        .wait_for(&format!("{BASE}/default/head"), 60, |m| {
            m.json()["quality"]["samples"] == 4
        })
        .await
        .json();
    assert_eq!(head["classes"], json!(["hat", "shoes"]), "{head}");
    let samples = ok(&mut c, BASE, "samples", json!({})).await;
    let kept: Vec<u64> = samples["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(|s| s["id"].as_u64())
        .collect();
    assert_eq!(kept, ids, "{samples}");
    assert!(!state.join("samples.json").exists());
    assert!(state.join("classifiers/default/samples.json").exists());
    // The next sample gets a new id, never a reused one.
    let added = ok(
        &mut c,
        BASE,
        "add_sample",
        json!({"label": "pants", "image": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, std::fs::read(fixtures().join("pants-2.jpg")).expect("fixture"))}),
    )
    .await;
    assert!(added["id"].as_u64().expect("id") > 4, "{added}");
}

#[test]
fn bad_regions_are_refused_with_the_key_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (region, key) in [
        (
            "{ x = 1.2, y = 0.0, width = 0.1, height = 0.1 }",
            "classifiers[0].region.x",
        ),
        (
            "{ x = 0.5, y = 0.0, width = 0.0, height = 0.5 }",
            "classifiers[0].region.width",
        ),
        (
            "{ x = 0.8, y = 0.0, width = 0.3, height = 0.5 }",
            "classifiers[0].region.width",
        ),
        (
            "{ x = 0.0, y = 0.7, width = 0.3, height = 0.5 }",
            "classifiers[0].region.height",
        ),
        (
            "{ x = 0, y = 0, width = 700, height = 100, unit = \"px\" }",
            "classifiers[0].region.width",
        ),
        (
            "{ x = -10, y = 0, width = 100, height = 100, unit = \"px\" }",
            "classifiers[0].region.x",
        ),
    ] {
        let config = config_file(
            dir.path(),
            1,
            &format!("\n[source]\nkind = \"synthetic\"\n\n[[classifiers]]\nname = \"door\"\nregion = {region}\n"),
        );
        // The synthetic source's frames are 640×480 by default.
        edit_config(&config, |t| {
            t.replacen("[source]\nkind = \"files\"\n", "", 1)
        });
        assert_exit_2(&config, "check-config", &[key]);
    }
    let config = config_file(dir.path(), 1, "\n[[classifiers]]\nname = \"door\"\n\n[[classifiers]]\nname = \"Door\"\n\n[[classifiers]]\nname = \"status\"\n");
    assert_exit_2(
        &config,
        "check-config",
        &["classifiers[1].name", "classifiers[2].name"],
    );
}

/// A head of the real backbone on one fixture of each of `classes`, saved where
/// `dir` says (a store directory).
fn save_head(dir: &Path, classes: &[&str]) {
    use edgehead::backbone::Embedder;
    let config = edgehead::config::BackboneConfig {
        model: crate::harness::model(),
        ..Default::default()
    };
    let e = edgehead::backbone::TractEmbedder::load(&config).expect("backbone");
    let features: Vec<Vec<f32>> = classes
        .iter()
        .map(|c| {
            e.embed(&fixture(&format!("{c}-1.jpg")))
                .expect("embed")
                .features
        })
        .collect();
    let samples: Vec<edgehead::head::Sample> = features
        .iter()
        .enumerate()
        .map(|(class, f)| edgehead::head::Sample { features: f, class })
        .collect();
    let names: Vec<String> = classes.iter().map(|c| c.to_string()).collect();
    let params = edgehead::head::TrainParams::from_config(
        &edgehead::config::HeadConfig::default(),
        edgehead::config::UnknownThreshold::Off,
    );
    let head = edgehead::head::train(&samples, &names, e.id(), 1, &params).expect("train");
    let (mut store, _) = edgehead::store::Store::open(dir).expect("store");
    store.save_head(&head).expect("save");
}

/// `edgehead predict`'s JSON lines for `images`.
fn predict(config: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--config", config.to_str().expect("utf8"), "predict"];
    all.extend_from_slice(args);
    let (code, out, err) = crate::harness::run_cli(&all);
    assert_eq!(code, 0, "predict failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn predict_uses_the_classifier_s_own_top_k_and_state_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    save_head(&state.join("classifiers/door"), &["hat", "shoes", "pants"]);
    let config = config_file(
        dir.path(),
        1,
        "[predictions]\ntop_k = 3\n\n[[classifiers]]\nname = \"door\"\npredictions = { top_k = 1 }\n\n[[classifiers]]\nname = \"bins\"\n",
    );
    let hat = fixtures().join("hat-2.jpg");
    let lines = predict(
        &config,
        &["--classifier", "door", hat.to_str().expect("utf8")],
    );
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["classifier"], "door");
    assert_eq!(lines[0]["label"], "hat", "{}", lines[0]);
    let top = lines[0]["top"].as_array().expect("top");
    assert_eq!(top.len(), 1, "door's top_k is 1: {}", lines[0]);
    // A classifier without a saved head says where it looked.
    let (code, _, err) = crate::harness::run_cli(&[
        "--config",
        config.to_str().expect("utf8"),
        "predict",
        "--classifier",
        "bins",
        hat.to_str().expect("utf8"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("classifiers/bins/head.json"), "{err}");
}

#[test]
fn predict_reads_a_state_directory_edgehead_0_1_left_unmigrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The single store of edgehead 0.1 at the top of the state directory.
    save_head(&dir.path().join("state"), &["hat", "shoes", "pants"]);
    let config = config_file(dir.path(), 1, "");
    let shoes = fixtures().join("shoes-2.jpg");
    let lines = predict(&config, &[shoes.to_str().expect("utf8")]);
    assert_eq!(lines[0]["classifier"], "default");
    assert_eq!(lines[0]["label"], "shoes", "{}", lines[0]);
    assert_eq!(lines[0]["top"].as_array().expect("top").len(), 3);
}

/// The discovery config topics of the label sensor of the classifier with key
/// `key` (`label` for the first classifier, `<slug>_label` for the others).
fn label_config(key: &str) -> String {
    format!("homeassistant/sensor/it/{key}/config")
}

#[tokio::test(flavor = "multi_thread")]
async fn classifiers_created_renamed_and_deleted_at_run_time_survive_a_restart() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), broker.port, "");
    let state = dir.path().join("state");
    let mut daemon = Process::start(&config);
    let mut c = Client::connect(broker.port, &[&format!("{BASE}/#"), "homeassistant/#"]).await;
    online(&mut c).await;
    // A new classifier on the left half of the frame, taught from two frames.
    // (Entities may be announced before the answer arrives: `wait_since`.)
    let mark = c.mark();
    let created = ok(
        &mut c,
        BASE,
        "create_classifier",
        json!({"name": "door", "region": {"x": 0.0, "y": 0.0, "width": 0.5, "height": 1.0},
               "predictions": {"top_k": 1}}),
    )
    .await;
    assert_eq!(created["name"], "door");
    c.wait_since(mark, &label_config("door_label"), 30, |m| {
        !m.payload.is_empty()
    })
    .await;
    let door = format!("{BASE}/door");
    ok(&mut c, &door, "label_frame", json!({"label": "left"})).await;
    ok(&mut c, &door, "label_frame", json!({"label": "right"})).await;
    c.wait_for(&format!("{door}/prediction"), 30, |_| true)
        .await;
    // A bad definition is refused with the key named, and changes nothing.
    let bad = c
        .request(
            BASE,
            "create_classifier",
            json!({"name": "bins", "region": {"x": 0.9, "y": 0.0, "width": 0.5, "height": 0.5}}),
        )
        .await;
    assert_eq!(bad["status"], "error", "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .expect("error")
            .contains("region.width"),
        "{bad}"
    );
    let dup = c
        .request(BASE, "create_classifier", json!({"name": "Door"}))
        .await;
    assert!(
        dup["error"].as_str().expect("error").contains("already"),
        "{dup}"
    );
    // Renamed: the samples go along, the old entities go away.
    let mark = c.mark();
    ok(
        &mut c,
        BASE,
        "rename_classifier",
        json!({"from": "door", "to": "porch"}),
    )
    .await;
    c.wait_since(mark, &label_config("door_label"), 30, |m| {
        m.payload.is_empty()
    })
    .await;
    c.wait_since(mark, &label_config("porch_label"), 30, |m| {
        !m.payload.is_empty()
    })
    .await;
    let porch = format!("{BASE}/porch");
    let classes = ok(&mut c, &porch, "classes", json!({})).await;
    assert_eq!(classes["samples"], 2, "{classes}");
    assert!(state.join("classifiers/porch/samples.json").exists());
    assert!(!state.join("classifiers/door").exists());
    let gone = c.request(&door, "classes", json!({})).await;
    assert_eq!(gone["status"], "error", "{gone}");
    // Edited: the region changes without a restart.
    let edited = ok(
        &mut c,
        BASE,
        "update_classifier",
        json!({"name": "porch", "region": {"x": 0.5, "y": 0.0, "width": 0.5, "height": 1.0}}),
    )
    .await;
    assert_eq!(edited["region"]["x"], 0.5, "{edited}");
    daemon.terminate(30);
    // After a restart: the run-time definitions are there, first the file's
    // classifier, then porch.
    let _daemon = Process::start(&config);
    online(&mut c).await;
    let list = ok(&mut c, BASE, "classifiers", json!({})).await;
    let names: Vec<&str> = list["classifiers"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["default", "porch"], "{list}");
    assert_eq!(list["classifiers"][1]["origin"], "created");
    assert_eq!(list["classifiers"][1]["region"]["x"], 0.5);
    let classes = ok(&mut c, &porch, "classes", json!({})).await;
    assert_eq!(classes["samples"], 2, "{classes}");
    // Deleted (with confirmation): store and entities gone.
    let unconfirmed = c
        .request(BASE, "delete_classifier", json!({"name": "porch"}))
        .await;
    assert_eq!(unconfirmed["status"], "error", "{unconfirmed}");
    let mark = c.mark();
    ok(
        &mut c,
        BASE,
        "delete_classifier",
        json!({"name": "porch", "confirm": true}),
    )
    .await;
    c.wait_since(mark, &label_config("porch_label"), 30, |m| {
        m.payload.is_empty()
    })
    .await;
    // Not even a recent crop the pipeline was keeping at that moment brings
    // the directory back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!state.join("classifiers/porch").exists());
    let last = c
        .request(
            BASE,
            "delete_classifier",
            json!({"name": "default", "confirm": true}),
        )
        .await;
    assert!(
        last["error"]
            .as_str()
            .expect("error")
            .contains("only classifier"),
        "{last}"
    );
}
