//! Tests of loading and validating the configuration.
#![allow(clippy::field_reassign_with_default)]

use std::collections::HashMap;
use std::path::PathBuf;

use super::*;

#[test]
fn threads_take_a_number_or_auto_from_toml_and_the_environment() {
    let t: BackboneConfig = toml::from_str("threads = 3").expect("toml int");
    assert_eq!(t.threads, Threads::Count(3));
    let t: BackboneConfig = toml::from_str("threads = \"auto\"").expect("auto");
    assert_eq!(t.threads, Threads::Auto);
    assert!(toml::from_str::<BackboneConfig>("threads = -2").is_err());
    assert!(toml::from_str::<BackboneConfig>("threads = \"many\"").is_err());
    let auto = Threads::Auto.resolve();
    assert!((1..=Threads::AUTO_MAX).contains(&auto), "{auto}");
    assert_eq!(Threads::Count(0).resolve(), 1);
    let s = load_settings(&env(&[("EDGEHEAD__BACKBONE__THREADS", "2")])).expect("env threads");
    assert_eq!(s.backbone.threads, Threads::Count(2));
    let s = load_settings(&env(&[
        ("EDGEHEAD__BACKBONE__THREADS", "auto"),
        ("EDGEHEAD__BACKBONE__PRECISION", "f16"),
    ]))
    .expect("env auto");
    assert_eq!(s.backbone.threads, Threads::Auto);
    assert_eq!(s.backbone.precision, Precision::F16);
    let e = load_settings(&env(&[("EDGEHEAD__BACKBONE__THREADS", "0")])).expect_err("0 threads");
    assert!(e.to_string().contains("backbone.threads"), "{e}");
}

#[test]
fn precision_auto_is_f32_without_fp16_arithmetic() {
    assert_eq!(BackboneConfig::default().precision, Precision::F32);
    let want = if tract_linalg::has_fp16() {
        Precision::F16
    } else {
        Precision::F32
    };
    assert_eq!(Precision::Auto.resolve(), want);
    assert_eq!(Precision::F16.resolve(), Precision::F16);
    assert_eq!("f16".parse::<Precision>(), Ok(Precision::F16));
    assert!("f8".parse::<Precision>().is_err());
    assert!(toml::from_str::<BackboneConfig>("precision = \"double\"").is_err());
}

#[test]
fn passwords_in_urls_are_masked() {
    assert_eq!(
        redact_userinfo("rtsp://admin:s3cret@cam:554/stream?a=b@c"),
        format!("rtsp://{MASK}@cam:554/stream?a=b@c")
    );
    assert_eq!(redact_userinfo("http://cam/x@y"), "http://cam/x@y");
    assert_eq!(redact_userinfo("-rtsp_transport"), "-rtsp_transport");
    let mut raw = RawConfig::default();
    raw.source.command.args = vec!["-i".into(), "rtsp://u:p4ss@cam/1".into()];
    raw.source.http.url = "http://u:p4ss@cam/stream".into();
    assert!(!to_masked_toml(&raw).contains("p4ss"));
}

fn env(pairs: &[(&str, &str)]) -> Sources {
    Sources {
        file: None,
        env: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    }
}

fn file(text: &str) -> (tempfile::TempDir, Sources) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgehead.toml");
    std::fs::write(&path, text).expect("write");
    (
        dir,
        Sources {
            file: Some(path),
            env: Some(HashMap::new()),
        },
    )
}

fn keys(e: &ConfigError) -> Vec<&str> {
    e.problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn defaults_load_without_a_file() {
    let raw = load(&env(&[])).expect("defaults load");
    assert_eq!(raw, RawConfig::default());
}

#[test]
fn environment_overrides_file_and_keeps_strings() {
    let (_d, mut s) = file("[mqtt]\nport = 1884\nusername = \"me\"\n");
    s.env = Some(
        [
            ("EDGEHEAD__MQTT__PASSWORD", "007"),
            ("EDGEHEAD__MQTT__PORT", "1885"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    let raw = load(&s).expect("load");
    assert_eq!(raw.mqtt.port, 1885);
    assert_eq!(raw.mqtt.password, "007");
    assert_eq!(raw.mqtt.username, "me");
}

#[test]
fn unknown_keys_are_all_reported_with_their_names() {
    let (_d, mut s) = file("colour = 1\n[mqtt]\nprot = 1\n[source.files]\nfsp = 2\n");
    s.env = Some(
        [("EDGEHEAD__MQTT__PASSWROD", "x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let err = load(&s).expect_err("unknown keys");
    let mut k = keys(&err);
    k.sort();
    assert_eq!(
        k,
        vec!["colour", "mqtt.passwrod", "mqtt.prot", "source.files.fsp"]
    );
    assert!(err.to_string().contains("EDGEHEAD__MQTT__PROT"));
}

#[test]
fn an_l2_penalty_the_cross_validation_grid_would_overflow_is_refused() {
    // l2_auto tries l2 × 100: above 1000 that grid leaves what f32 trains well.
    let err = load_settings(&env(&[("EDGEHEAD__HEAD__L2", "5000")])).expect_err("too large");
    assert_eq!(keys(&err), vec!["head.l2"]);
    load_settings(&env(&[("EDGEHEAD__HEAD__L2", "1000")])).expect("the largest allowed");
}

#[test]
fn a_classifier_s_own_settings_are_checked_under_its_key() {
    let (_d, s) = file(
        "[[classifiers]]\nname = \"door\"\npredictions = { top_k = 0 }\nhead = { l2 = -1.0 }\n",
    );
    let err = load_settings(&s).expect_err("two problems");
    let mut k = keys(&err);
    k.sort();
    assert_eq!(
        k,
        vec!["classifiers[0].head.l2", "classifiers[0].predictions.top_k"]
    );
}

#[test]
fn device_classes_must_be_home_assistant_s_and_name_valid_labels() {
    let (_d, s) = file(
        "[[classifiers]]\nname = \"door\"\ndevice_classes = { open = \"garage_door\", shut = \"portal\", \"a/b\" = \"door\" }\n",
    );
    let err = load_settings(&s).expect_err("two problems");
    let mut k = keys(&err);
    k.sort();
    assert_eq!(
        k,
        vec![
            "classifiers[0].device_classes.a/b",
            "classifiers[0].device_classes.shut"
        ]
    );
    let (_d, s) =
        file("[[classifiers]]\nname = \"door\"\ndevice_classes = { Open = \"garage_door\" }\n");
    let settings = load_settings(&s).expect("valid");
    assert!(
        settings.classifiers[0]
            .device_classes
            .iter()
            .any(|(l, d)| crate::names::same(l, "open") && d == "garage_door"),
        "{:?}",
        settings.classifiers[0].device_classes
    );
}

#[test]
fn a_classifier_name_longer_than_a_directory_name_is_refused() {
    // 64 characters, but 256 bytes of UTF-8: run would fail to create its store.
    let name = "𝐀".repeat(64);
    let (_d, s) = file(&format!("[[classifiers]]\nname = \"{name}\"\n"));
    let err = load_settings(&s).expect_err("too long");
    assert_eq!(keys(&err), vec!["classifiers[0].name"]);
}

#[test]
fn unknown_keys_do_not_hide_invalid_values() {
    let (_d, s) = file("[mqtt]\nprot = 1\n[predictions]\ntop_k = 0\n");
    let err = load_settings(&s).expect_err("two problems");
    let mut k = keys(&err);
    k.sort();
    assert_eq!(k, vec!["mqtt.prot", "predictions.top_k"]);
}

#[test]
fn wrong_type_names_the_key() {
    let (_d, s) = file("[mqtt]\nport = \"eighteen\"\n");
    let err = load(&s).expect_err("bad type");
    assert_eq!(keys(&err), vec!["mqtt.port"], "{err}");
}

#[test]
fn invalid_values_are_reported_together() {
    let mut raw = RawConfig::default();
    raw.device_id = "bad/id".into();
    raw.mqtt.predictions.qos = 3;
    raw.backbone.mean = vec![1.0];
    raw.backbone.model = "/nonexistent/model.onnx".into();
    raw.predictions.top_k = 0;
    raw.head.unknown_threshold = "maybe".into();
    let err = validate(raw).expect_err("invalid");
    let k = keys(&err);
    for want in [
        "device_id",
        "mqtt.predictions.qos",
        "backbone.mean",
        "backbone.model",
        "predictions.top_k",
        "head.unknown_threshold",
    ] {
        assert!(k.contains(&want), "{want} missing from {k:?}");
    }
}

#[test]
fn external_host_turns_the_embedded_broker_off() {
    let mut raw = RawConfig::default();
    raw.backbone.model = PathBuf::from("Cargo.toml");
    raw.device_id = "cam1".into();
    let s = validate(raw.clone()).expect("valid");
    assert!(s.embedded_broker.is_some());
    assert_eq!(s.topic_base, "edgehead/cam1");
    assert_eq!(s.client_id, "edgehead-cam1");
    raw.mqtt.host = "broker.lan".into();
    let s = validate(raw).expect("valid");
    assert!(s.embedded_broker.is_none());
}

#[test]
fn print_config_masks_the_password() {
    let mut raw = RawConfig::default();
    raw.mqtt.password = "hunter2".into();
    let text = to_masked_toml(&raw);
    assert!(!text.contains("hunter2"));
    assert!(text.contains(MASK));
    // What print-config prints loads back as a configuration.
    let (_d, s) = file(&text);
    let back = load(&s).expect("printed config loads");
    assert_eq!(back.mqtt.port, raw.mqtt.port);
}
