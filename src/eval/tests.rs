//! Tests of the evaluation's parsing, listing and saved files.

use std::path::PathBuf;

use super::dataset::{list_split, save_draws, save_embeddings, Item};
use super::*;

#[test]
fn shots_parse() {
    assert_eq!("5".parse::<Shots>(), Ok(Shots::K(5)));
    assert_eq!("all".parse::<Shots>(), Ok(Shots::All));
    assert!("0".parse::<Shots>().is_err());
    assert!("x".parse::<Shots>().is_err());
}

#[test]
fn lists_a_split_by_class_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (c, n) in [("a", 2), ("b", 1)] {
        let d = dir.path().join("train").join(c);
        std::fs::create_dir_all(&d).expect("mkdir");
        for i in 0..n {
            std::fs::write(d.join(format!("{i}.jpg")), b"x").expect("write");
        }
        std::fs::write(d.join("notes.txt"), b"x").expect("write");
    }
    let items = list_split(dir.path(), "train").expect("list");
    assert_eq!(items.len(), 3);
    assert_eq!(items[2].class, "b");
    assert!(list_split(dir.path(), "val").is_err());
}

#[test]
fn draws_name_rows_of_the_saved_embeddings() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Item 1 did not embed: item 2 is saved row 1.
    let train_f = vec![Some(vec![0.0]), None, Some(vec![1.0]), Some(vec![2.0])];
    let draws = vec![
        (Shots::K(1), vec![vec![0, 3], vec![2, 0]]),
        (Shots::All, vec![vec![0, 2, 3]]),
    ];
    save_draws(dir.path(), &train_f, &draws).expect("save");
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("draws.json")).expect("read"),
    )
    .expect("json");
    assert_eq!(v["1"], serde_json::json!([[0, 2], [1, 0]]));
    assert_eq!(v["all"], serde_json::json!([[0, 1, 2]]));
}

#[test]
fn augmented_rows_point_at_their_original_train_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let item = |name: &str| Item {
        split: "train".into(),
        class: "a".into(),
        path: PathBuf::from(name),
    };
    let train = vec![item("0.jpg"), item("1.jpg")];
    // 0.jpg did not embed; 1.jpg is saved row 0 and has two views. The same items
    // as the test split (`--test-split train`) repeat the paths in later rows.
    let feats = vec![None, Some(vec![1.0f32])];
    let views = vec![Vec::new(), vec![vec![2.0f32], vec![3.0]]];
    save_embeddings(
        dir.path(),
        1,
        &[(&train, &feats), (&train, &feats)],
        (&train, &views),
    )
    .expect("save");
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("embeddings.json")).expect("read"),
    )
    .expect("json");
    let rows = index["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 4);
    for aug in &rows[2..] {
        assert_eq!(aug["split"], "train+aug");
        assert_eq!(aug["of"], 0, "{aug}");
    }
    let bin = std::fs::read(dir.path().join("embeddings.f32")).expect("bin");
    assert_eq!(bin.len(), 4 * 4);
}

#[test]
fn heads_parse_and_print() {
    for h in ["ncm", "softmax", "combined", "auto", "logreg"] {
        assert_eq!(h.parse::<EvalHead>().expect(h).to_string(), h);
    }
    assert!("svm".parse::<EvalHead>().is_err());
}

#[test]
fn stats_of_a_sample() {
    let (mean, std, min, max) = stats(&[1.0, 3.0]);
    assert_eq!((mean, std, min, max), (2.0, 1.0, 1.0, 3.0));
}
