//! tract runs the shipped backbone like onnxruntime does: features compared with
//! reference outputs computed by onnxruntime on the same model file
//! (tests/fixtures/reference.json, made by tools/make_reference.py).

use edgehead::backbone::{cosine, Embedder, Preprocess, TractEmbedder};
use edgehead::config::{BackboneConfig, Precision, ResizePolicy};
use serde_json::Value;

use crate::harness::{model, root};

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/reference.json"))
        .expect("reference.json");
    serde_json::from_str(&text).expect("reference json")
}

fn features(v: &Value) -> Vec<f32> {
    v["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn load() -> TractEmbedder {
    TractEmbedder::load(&BackboneConfig {
        model: model(),
        ..BackboneConfig::default()
    })
    .expect("the shipped model loads")
}

#[test]
fn f16_features_stay_within_cosine_0_999_of_f32() {
    let f32_embedder = load();
    let f16_embedder = TractEmbedder::load(&BackboneConfig {
        model: model(),
        precision: Precision::F16,
        ..BackboneConfig::default()
    })
    .expect("the f16 plan loads");
    assert_eq!(f16_embedder.precision, Precision::F16);
    assert_ne!(
        f16_embedder.id(),
        f32_embedder.id(),
        "f16 features are another feature space: samples must be re-embedded"
    );
    let mut images = 0;
    for entry in std::fs::read_dir(root().join("tests/fixtures/images")).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "jpg") {
            continue;
        }
        let img = image::open(&path).expect("jpg").into_rgb8();
        let a = f32_embedder.embed(&img).expect("f32").features;
        let b = f16_embedder.embed(&img).expect("f16").features;
        let c = cosine(&a, &b);
        assert!(c >= 0.999, "{}: cosine {c}", path.display());
        images += 1;
    }
    assert!(images >= 3, "{images} fixture images");
}

#[test]
fn tract_matches_onnxruntime_on_the_same_input() {
    let reference = reference();
    let embedder = load();
    assert_eq!(
        embedder.id().sha256,
        reference["model_sha256"],
        "reference.json is for another model file"
    );
    assert_eq!(embedder.dim(), 1280);
    // The PNG is the exact model input: only normalization, no resampling.
    let exact = Preprocess {
        resize: ResizePolicy::Stretch,
        ..embedder.preprocess().clone()
    };
    for entry in reference["entries"].as_array().expect("entries") {
        let png = image::open(
            root()
                .join("tests/fixtures")
                .join(entry["input_png"].as_str().expect("png")),
        )
        .expect("png")
        .into_rgb8();
        assert_eq!(png.dimensions(), (224, 224));
        let ours = embedder.embed_tensor(exact.run(&png)).expect("embed");
        let theirs = features(entry);
        let c = cosine(&ours, &theirs);
        assert!(c >= 0.999, "{}: cosine {c}", entry["image"]);
        let max_diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_diff < 0.05, "{}: max |diff| {max_diff}", entry["image"]);
    }
}

#[test]
fn edgehead_preprocessing_of_the_jpeg_stays_close_to_the_reference() {
    let reference = reference();
    let embedder = load();
    let entries = reference["entries"].as_array().expect("entries");
    let mut own = Vec::new();
    for entry in entries {
        let img = image::open(
            root()
                .join("tests/fixtures")
                .join(entry["image"].as_str().expect("image")),
        )
        .expect("jpeg")
        .into_rgb8();
        let e = embedder.embed(&img).expect("embed");
        let c = cosine(&e.features, &features(entry));
        // Different JPEG decoders and resamplers: close, not identical.
        assert!(c >= 0.98, "{}: cosine {c}", entry["image"]);
        own.push(e.features);
    }
    // And different images stay apart.
    assert!(cosine(&own[0], &own[1]) < 0.9);
}

#[test]
fn a_wrong_output_name_lists_the_outputs() {
    let err = TractEmbedder::load(&BackboneConfig {
        model: model(),
        output: "logits".into(),
        ..BackboneConfig::default()
    })
    .err()
    .expect("no such output");
    assert!(err.to_string().contains("features"), "{err}");
}
