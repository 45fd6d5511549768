//! Requests as real clients send them: repeated, in any script, long next to
//! short, and a seeded fuzz of every operation whose refusals change nothing.

use serde_json::{json, Value};

use crate::harness::{b64, fixture_bytes, sample_ids, start_daemon, Client, BASE};

#[tokio::test(flavor = "multi_thread")]
async fn repeated_requests_and_images_are_not_stored_twice_and_labels_normalize() {
    let (_broker, _dir, _daemon, mut c) = start_daemon("").await;
    let hat = fixture_bytes("hat-1.jpg");
    let shoes = fixture_bytes("shoes-1.jpg");
    let pants = fixture_bytes("pants-1.jpg");

    // The same transaction twice: one sample, the same answer twice.
    let body = json!({"label": "hat", "image": b64(&hat)});
    let first = c
        .request_with(BASE, "add_sample", body.clone(), "tx-1")
        .await;
    assert_eq!(first["status"], "ok", "{first}");
    let again = c.request_with(BASE, "add_sample", body, "tx-1").await;
    assert_eq!(again, first);
    // A repeated label_frame transaction labels one frame, not two.
    let lf = json!({"label": "hat"});
    let first_lf = c
        .request_with(BASE, "label_frame", lf.clone(), "tx-2")
        .await;
    assert_eq!(first_lf["status"], "ok", "{first_lf}");
    let again_lf = c.request_with(BASE, "label_frame", lf, "tx-2").await;
    assert_eq!(again_lf, first_lf);
    assert_eq!(sample_ids(&mut c).await.len(), 2);
    // A transaction reused for another request (a client whose counter restarted)
    // is carried out.
    let reused = c
        .request_with(
            BASE,
            "add_sample",
            json!({"label": "shoes", "image": b64(&fixture_bytes("shoes-2.jpg"))}),
            "tx-1",
        )
        .await;
    assert_eq!(reused["data"]["label"], "shoes", "{reused}");
    assert_eq!(sample_ids(&mut c).await.len(), 3);
    c.request(BASE, "remove_sample", json!({"id": reused["data"]["id"]}))
        .await;

    // The same image bytes to the same class (in another case, no transaction
    // reuse): the answer names the sample that exists.
    let dup = c
        .request(
            BASE,
            "add_sample",
            json!({"label": "HAT", "image": b64(&hat)}),
        )
        .await;
    assert_eq!(dup["status"], "ok", "{dup}");
    assert_eq!(dup["data"]["duplicate"], true, "{dup}");
    assert_eq!(dup["data"]["id"], first["data"]["id"]);
    assert_eq!(dup["data"]["label"], "hat");
    assert_eq!(sample_ids(&mut c).await.len(), 2);

    // Labels: any script with its marks, NFC, case-insensitive, HA's special states refused.
    let hindi = c
        .request(
            BASE,
            "add_sample",
            json!({"label": "बिल्ली", "image": b64(&shoes)}),
        )
        .await;
    assert_eq!(hindi["status"], "ok", "{hindi}");
    let decomposed = c
        .request(
            BASE,
            "add_sample",
            json!({"label": "cafe\u{301}", "image": b64(&pants)}),
        )
        .await;
    assert_eq!(decomposed["data"]["label"], "caf\u{e9}", "{decomposed}");
    let upper = c
        .request(
            BASE,
            "add_sample",
            json!({"label": "CAFÉ", "image": b64(&fixture_bytes("pants-2.jpg"))}),
        )
        .await;
    assert_eq!(upper["data"]["label"], "caf\u{e9}", "{upper}");
    assert_eq!(upper["data"]["class_samples"], 2, "{upper}");
    for special in ["unavailable", "None", "unknown", "null"] {
        let r = c
            .request(
                BASE,
                "add_sample",
                json!({"label": special, "image": b64(&shoes)}),
            )
            .await;
        assert_eq!(r["status"], "error", "{special}: {r}");
        assert!(
            r["error"].as_str().expect("error").contains("reserved"),
            "{r}"
        );
    }
    let classes = c.request(BASE, "classes", json!({})).await;
    let names: Vec<&str> = classes["data"]["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| c["label"].as_str().expect("label"))
        .collect();
    assert_eq!(names, ["hat", "बिल्ली", "caf\u{e9}"]);
    // Deleting by another spelling finds the class.
    let del = c
        .request(BASE, "delete_class", json!({"label": "Café"}))
        .await;
    assert_eq!(del["data"]["deleted"], 2, "{del}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_label_frame_does_not_hold_up_short_requests() {
    let (_broker, _dir, _daemon, mut c) = start_daemon("").await;
    let collect = json!({"label": "hat", "count": 3, "interval_ms": 2000, "transaction": "long"});
    c.publish(&format!("{BASE}/request/label_frame"), collect.to_string())
        .await;
    // While it waits between frames, short requests are answered.
    for op in ["classes", "samples", "head"] {
        let r = c.request(BASE, op, json!({})).await;
        assert_eq!(r["status"], "ok", "{op}: {r}");
    }
    let answered_early = c
        .seen
        .iter()
        .any(|m| m.topic.ends_with("/response/label_frame"));
    assert!(
        !answered_early,
        "label_frame answered before its frames were in"
    );
    // A second label_frame meanwhile is refused as busy rather than queued.
    let second = c
        .request(BASE, "label_frame", json!({"label": "hat"}))
        .await;
    assert!(
        second["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("busy")),
        "{second}"
    );
    let done = c
        .wait_for(&format!("{BASE}/response/label_frame"), 30, |m| {
            m.json()["transaction"] == "long"
        })
        .await
        .json();
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(done["data"]["ids"].as_array().expect("ids").len(), 3);
}

fn fuzz_payload(rng: &mut fastrand::Rng, op: &str, images: &[Vec<u8>]) -> Vec<u8> {
    let image = images[rng.usize(..images.len())].clone();
    let valid = match op {
        "add_sample" => json!({"label": "fuzz", "image": b64(&image)}),
        "label_frame" => json!({"label": "fuzz", "count": 1}),
        "samples" => json!({"label": "hat"}),
        "remove_sample" => json!({"id": rng.u64(1000..2000)}),
        "rename_class" => json!({"from": "nope", "to": "x"}),
        "merge_class" => json!({"from": "nope", "into": "hat"}),
        "delete_class" => json!({"label": "nope"}),
        "reset" => json!({"confirm": false}),
        _ => json!({}),
    };
    let mut bytes = match rng.u8(..6) {
        // A mutated image inside a valid add_sample.
        0 if op == "add_sample" => {
            let mut img = image;
            for _ in 0..rng.usize(1..20) {
                match rng.u8(..3) {
                    0 if !img.is_empty() => {
                        let i = rng.usize(..img.len());
                        img[i] ^= 1 << rng.u8(..8);
                    }
                    1 => img.truncate(rng.usize(..=img.len())),
                    _ => {
                        let i = rng.usize(..=img.len());
                        img.insert(i, rng.u8(..));
                    }
                }
            }
            json!({"label": "fuzz", "image": b64(&img)})
                .to_string()
                .into_bytes()
        }
        1 => (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect(),
        2 => {
            let mut v = valid.clone();
            let keys = [
                "label",
                "image",
                "count",
                "interval_ms",
                "id",
                "from",
                "to",
                "into",
                "confirm",
                "zzz",
            ];
            let vals = [
                json!(null),
                json!(-1),
                json!(1e300),
                json!("../x"),
                json!([]),
                json!({}),
                json!("x".repeat(500)),
                json!(u64::MAX),
                json!(true),
            ];
            v[keys[rng.usize(..keys.len())]] = vals[rng.usize(..vals.len())].clone();
            v.to_string().into_bytes()
        }
        3 => {
            let mut t = valid.to_string().into_bytes();
            let i = rng.usize(..t.len());
            t.truncate(i);
            t
        }
        _ => valid.to_string().into_bytes(),
    };
    if bytes.is_empty() {
        bytes.push(b'{');
    }
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn fuzzed_requests_are_all_answered_and_refusals_change_nothing() {
    let (_broker, _dir, daemon, mut c) = start_daemon("\n[learn]\ndebounce_ms = 50\n").await;
    let hat = fixture_bytes("hat-1.jpg");
    c.request(
        BASE,
        "add_sample",
        json!({"label": "hat", "image": b64(&hat)}),
    )
    .await;
    // Images meant to hurt: big declared sizes with little data.
    let mut big_png = Vec::new();
    image::ImageBuffer::<image::Rgba<u16>, _>::new(4096, 4096)
        .write_to(
            &mut std::io::Cursor::new(&mut big_png),
            image::ImageFormat::Png,
        )
        .expect("png");
    let mut header_only = hat[..hat.len().min(700)].to_vec();
    // SOF0 height/width fields of the fixture set to 8192×8192.
    if let Some(i) = header_only.windows(2).position(|w| w == [0xFF, 0xC0]) {
        if i + 9 <= header_only.len() {
            header_only[i + 5..i + 9].copy_from_slice(&[0x20, 0x00, 0x20, 0x00]);
        }
    }
    let images = vec![
        hat.clone(),
        fixture_bytes("shoes-2.jpg"),
        big_png,
        header_only,
    ];
    // Every operation the daemon knows, and one it does not.
    let ops: Vec<&str> = edgehead::learn::OpKind::ALL
        .map(edgehead::learn::OpKind::name)
        .into_iter()
        .chain(["nonsense"])
        .collect();
    let mut rng = fastrand::Rng::with_seed(20261129);
    let mut samples = sample_ids(&mut c).await;
    let mut refused = 0;
    for i in 0..150 {
        let op = ops[rng.usize(..ops.len())];
        let payload = fuzz_payload(&mut rng, op, &images);
        // Answers are matched by transaction when the payload is JSON with one;
        // raw payloads are matched by arrival order on their response topic.
        let tx = format!("fz-{i}");
        let payload = match serde_json::from_slice::<Value>(&payload) {
            Ok(Value::Object(mut o)) => {
                o.insert("transaction".into(), json!(tx));
                Value::Object(o).to_string().into_bytes()
            }
            _ => payload,
        };
        let has_tx = serde_json::from_slice::<Value>(&payload)
            .is_ok_and(|v| v["transaction"] == tx.as_str());
        let response = format!("{BASE}/response/{op}");
        c.publish(&format!("{BASE}/request/{op}"), payload.clone())
            .await;
        let answer = c
            .wait_for(&response, 60, |m| {
                !has_tx || m.json()["transaction"] == tx.as_str()
            })
            .await
            .json();
        let status = answer["status"].as_str().expect("status");
        assert!(status == "ok" || status == "error", "{answer}");
        let now = sample_ids(&mut c).await;
        if status == "error" {
            refused += 1;
            assert_eq!(now, samples, "refused {op} changed the store: {answer}");
        }
        samples = now;
    }
    assert!(refused > 50, "the fuzz hardly hit refusals ({refused})");
    // Still alive and answering, and memory stayed within a 512 MB board's means.
    let r = c.request(BASE, "classes", json!({})).await;
    assert_eq!(r["status"], "ok");
    let peak_mib = daemon.peak_rss_kib() / 1024;
    eprintln!("request fuzz: {refused} of 150 refused, daemon peak RSS {peak_mib} MiB");
    assert!(peak_mib < 300, "peak RSS {peak_mib} MiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_requests_from_many_clients_gets_exactly_one_answer_each() {
    // 20 clients send 50 mixed requests each as fast as they can: the learner's
    // queue fills (busy answers) and so does the MQTT client's outgoing queue.
    // Every request must still get exactly one answer.
    let (broker, _dir, _daemon, _c) = start_daemon("").await;
    let image = b64(&fixture_bytes("hat-1.jpg"));
    let mut tasks = Vec::new();
    for client in 0..20 {
        let image = image.clone();
        let port = broker.port;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(port, &[&format!("{BASE}/response/+")]).await;
            let mut waiting = std::collections::HashSet::new();
            for i in 0..50 {
                let tx = format!("burst-{client}-{i}");
                let (op, body) = match i % 6 {
                    0 => ("add_sample", json!({"label": "hat", "image": image})),
                    1 => ("remove_sample", json!({"id": 987_654_321})),
                    2 => ("retrain", json!({})),
                    3 => ("samples", json!({})),
                    4 => ("head", json!({})),
                    _ => ("classes", json!({})),
                };
                let mut body = body;
                body["transaction"] = json!(tx);
                c.publish(&format!("{BASE}/request/{op}"), body.to_string())
                    .await;
                waiting.insert(tx);
            }
            let (mut answered, mut twice, mut busy) = (0, 0, 0);
            while !waiting.is_empty() {
                let Some(m) = c.next(60).await else { break };
                let v = m.json();
                let Some(tx) = v["transaction"].as_str() else {
                    continue;
                };
                if !tx.starts_with(&format!("burst-{client}-")) {
                    continue;
                }
                if waiting.remove(tx) {
                    answered += 1;
                    if v["error"].as_str().is_some_and(|e| e.starts_with("busy")) {
                        busy += 1;
                    }
                } else {
                    twice += 1;
                }
            }
            (answered, twice, busy)
        }));
    }
    let (mut answered, mut twice, mut busy) = (0, 0, 0);
    for t in tasks {
        let (a, d, b) = t.await.expect("client task");
        answered += a;
        twice += d;
        busy += b;
    }
    eprintln!("burst: {answered} of 1000 answered ({busy} busy), {twice} answered twice");
    assert_eq!(
        answered,
        1000,
        "{} requests never answered",
        1000 - answered
    );
    assert_eq!(twice, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_refused_label_teach_stores_nothing_until_a_label_is_chosen_again() {
    // Home Assistant: "New label" half/open (refused: /), then "Teach" with the
    // door open. The frame must not be stored under the class chosen before.
    let (_broker, _dir, _daemon, mut c) = start_daemon("").await;
    let teach = json!({"selected_label": true});
    let r = c
        .request(BASE, "select_label", json!({"label": "closed"}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let r = c.request(BASE, "label_frame", teach.clone()).await;
    assert_eq!(r["status"], "ok", "{r}");
    let mark = c.mark();
    let refused = c
        .request(BASE, "select_label", json!({"label": "half/open"}))
        .await;
    assert_eq!(refused["status"], "error", "{refused}");
    // Home Assistant's select shows no choice any more.
    c.wait_since(mark, &format!("{BASE}/default/teach_label"), 10, |m| {
        m.text() == "None"
    })
    .await;
    let r = c.request(BASE, "label_frame", teach.clone()).await;
    assert_eq!(r["status"], "error", "{r}");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("was refused")),
        "{r}"
    );
    let ids = sample_ids(&mut c).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    // Chosen again: Teach works, under the new label.
    let r = c
        .request(BASE, "select_label", json!({"label": "open"}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let r = c.request(BASE, "label_frame", teach).await;
    assert_eq!(r["status"], "ok", "{r}");
    let labels: Vec<String> = sample_ids(&mut c)
        .await
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    assert_eq!(labels, ["closed", "open"]);
}
