//! Bundles: round trips, merges, and every kind of bad bundle refused.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::backbone::BackboneId;
use crate::config::ClassifierConfig;
use crate::imaging::decode::ImageLimits;
use crate::store::{Origin, Store};

const IMAGES: [&str; 6] = ["hat-1", "hat-2", "pants-1", "pants-2", "shoes-1", "shoes-2"];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/images/{name}.jpg",
        env!("CARGO_MANIFEST_DIR")
    );
    fs::read(path).expect("fixture")
}

fn bb() -> BackboneId {
    BackboneId::new("m".into(), "a".repeat(64), "")
}

fn limits() -> ImportLimits {
    ImportLimits {
        max_bytes: 64 << 20,
        max_image_bytes: 8 << 20,
        max_samples: 100,
        max_classes: 10,
        image: ImageLimits::default(),
    }
}

fn def(name: &str) -> ClassifierConfig {
    ClassifierConfig {
        name: name.into(),
        ..Default::default()
    }
}

/// A store in `dir` with the fixture images `names` (label: the name's stem).
fn store_with(dir: &Path, names: &[&str]) {
    let (mut s, _) = Store::open(dir).expect("open");
    for (i, n) in names.iter().enumerate() {
        let label = n.split('-').next().unwrap_or("x");
        s.add(
            label,
            Origin::Image,
            &fixture(n),
            &bb(),
            &[i as f32, 1.0],
            None,
        )
        .expect("add");
    }
}

fn export_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    export(dir, &def("porch"), &mut out).expect("export");
    out
}

fn stage_into(
    bytes: &[u8],
    existing: Option<&Path>,
    mode: Mode,
) -> (tempfile::TempDir, Result<Staged, BundleError>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = stage(bytes, &limits(), &tmp.path().join("staged"), existing, mode);
    (tmp, r)
}

fn staged_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("staged")
}

/// Every file below `dir` with its bytes, for "nothing changed" checks.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_store_round_trips_through_a_bundle() {
    let src = tempfile::tempdir().expect("tempdir");
    store_with(src.path(), &IMAGES);
    let bytes = export_bytes(src.path());
    let (tmp, r) = stage_into(&bytes, None, Mode::New);
    let staged = r.expect("stage");
    assert_eq!((staged.samples, staged.added, staged.classes), (6, 6, 3));
    assert_eq!(staged.def.name, "porch");
    assert_eq!(staged.backbone.as_deref(), Some(bb().features.as_str()));
    let (from, _) = Store::open(src.path()).expect("open");
    let (to, report) = Store::open(&staged_dir(&tmp)).expect("open staged");
    assert_eq!(report.removed_orphans, 0);
    assert_eq!(from.classes(), to.classes());
    for s in from.samples() {
        let t = to.samples().iter().find(|t| t.id == s.id).expect("same id");
        assert_eq!(
            (&t.label, t.added_at, t.origin),
            (&s.label, s.added_at, s.origin)
        );
        assert_eq!(to.load_thumbnail(s.id).ok(), from.load_thumbnail(s.id).ok());
        assert_eq!(
            to.load_embedding(s.id, &bb()),
            from.load_embedding(s.id, &bb())
        );
    }
}

#[test]
fn a_merge_keeps_both_sides_and_skips_images_already_there() {
    let a = tempfile::tempdir().expect("tempdir");
    store_with(a.path(), &IMAGES[..4]);
    let b = tempfile::tempdir().expect("tempdir");
    store_with(b.path(), &IMAGES[2..]);
    let before = snapshot(b.path());
    let (tmp, r) = stage_into(&export_bytes(a.path()), Some(b.path()), Mode::Merge);
    let staged = r.expect("merge");
    // pants-1 and pants-2 are on both sides.
    assert_eq!((staged.added, staged.duplicates, staged.samples), (2, 2, 6));
    let (to, _) = Store::open(&staged_dir(&tmp)).expect("open staged");
    let mut classes = to.classes();
    classes.sort();
    assert_eq!(
        classes,
        vec![("hat".into(), 2), ("pants".into(), 2), ("shoes".into(), 2)]
    );
    let mut ids: Vec<u64> = to.samples().iter().map(|s| s.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 6, "ids are unique");
    // The local store is not changed by staging.
    assert_eq!(snapshot(b.path()), before);
}

#[test]
fn replacing_keeps_the_head_version_counter() {
    let a = tempfile::tempdir().expect("tempdir");
    store_with(a.path(), &IMAGES[..2]);
    let b = tempfile::tempdir().expect("tempdir");
    store_with(b.path(), &IMAGES[2..]);
    let next = Store::open(b.path()).expect("open").0.next_head_version();
    let (tmp, r) = stage_into(&export_bytes(a.path()), Some(b.path()), Mode::Replace);
    assert_eq!(r.expect("replace").samples, 2);
    let (to, _) = Store::open(&staged_dir(&tmp)).expect("open staged");
    assert_eq!(to.next_head_version(), next);
}

// --- Bad bundles -----------------------------------------------------------

/// A gzip'd tar of `entries` (name, bytes, type), names written raw.
fn raw_bundle(entries: &[(&str, Vec<u8>, tar::EntryType)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, bytes, kind) in entries {
        // GNU extension entries only count as such in a GNU header.
        let mut h = match kind {
            tar::EntryType::GNULongName => tar::Header::new_gnu(),
            _ => tar::Header::new_old(),
        };
        let field = &mut h.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(bytes.len() as u64);
        h.set_entry_type(*kind);
        if kind.is_symlink() {
            h.set_link_name("/etc/passwd").expect("link");
        }
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, bytes.as_slice()).expect("append");
    }
    tar.into_inner().and_then(|gz| gz.finish()).expect("finish")
}

fn manifest_json(samples: &[(u64, &str, &[u8])], version: u32) -> Vec<u8> {
    let m = BundleManifest {
        format: FORMAT_NAME.into(),
        version,
        created_at: 1,
        edgehead: "test".into(),
        classifier: def("porch"),
        backbone: None,
        classes: Vec::new(),
        samples: samples
            .iter()
            .map(|(id, label, jpg)| BundleSample {
                id: *id,
                label: label.to_string(),
                added_at: 1,
                origin: Origin::Image,
                sha256: sha256_hex(jpg),
                embedding: false,
            })
            .collect(),
        head: false,
    };
    serde_json::to_vec(&m).expect("json")
}

fn file() -> tar::EntryType {
    tar::EntryType::Regular
}

/// A good bundle of one sample (hat-1), with `extra` entries after it.
fn one_sample(extra: Vec<(&str, Vec<u8>, tar::EntryType)>) -> Vec<u8> {
    let jpg = fixture("hat-1");
    let mut entries = vec![
        (
            MANIFEST_ENTRY,
            manifest_json(&[(1, "hat", &jpg)], VERSION),
            file(),
        ),
        ("samples/1.jpg", jpg, file()),
    ];
    entries.extend(extra);
    raw_bundle(&entries)
}

fn refusal(bytes: &[u8]) -> String {
    let (tmp, r) = stage_into(bytes, None, Mode::New);
    drop(tmp);
    match r {
        Err(BundleError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_good_hand_made_bundle_is_taken() {
    let (_tmp, r) = stage_into(&one_sample(Vec::new()), None, Mode::New);
    assert_eq!(r.expect("good").samples, 1);
}

#[test]
fn every_kind_of_bad_bundle_is_refused_with_its_reason() {
    let jpg = fixture("hat-1");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "parent",
            one_sample(vec![("../evil", b"x".to_vec(), file())]),
            "outside",
        ),
        (
            "absolute",
            one_sample(vec![("/etc/evil", b"x".to_vec(), file())]),
            "outside",
        ),
        (
            "inner parent",
            one_sample(vec![("samples/../../x", b"x".to_vec(), file())]),
            "outside",
        ),
        (
            "symlink",
            one_sample(vec![("samples/2.jpg", Vec::new(), tar::EntryType::Symlink)]),
            "not a regular file",
        ),
        (
            "hard link",
            one_sample(vec![("samples/2.jpg", Vec::new(), tar::EntryType::Link)]),
            "not a regular file",
        ),
        (
            "unknown entry",
            one_sample(vec![("notes.txt", b"x".to_vec(), file())]),
            "unexpected entry",
        ),
        (
            "stray sample",
            one_sample(vec![("samples/2.jpg", jpg.clone(), file())]),
            "belongs to no sample",
        ),
        (
            "twice",
            one_sample(vec![("samples/1.jpg", jpg.clone(), file())]),
            "twice",
        ),
        (
            "bad embedding",
            one_sample(vec![("samples/1.emb", b"EHEMB001".to_vec(), file())]),
            "not an embedding",
        ),
        (
            "manifest not first",
            raw_bundle(&[("samples/1.jpg", jpg.clone(), file())]),
            "first entry",
        ),
        (
            "unknown version",
            raw_bundle(&[(MANIFEST_ENTRY, manifest_json(&[], 99), file())]),
            "version 99",
        ),
        (
            "not json",
            raw_bundle(&[(MANIFEST_ENTRY, b"{".to_vec(), file())]),
            "not JSON",
        ),
        (
            "missing image",
            raw_bundle(&[(
                MANIFEST_ENTRY,
                manifest_json(&[(1, "hat", &jpg)], VERSION),
                file(),
            )]),
            "missing",
        ),
        (
            "duplicate ids",
            raw_bundle(&[(
                MANIFEST_ENTRY,
                manifest_json(&[(1, "hat", &jpg), (1, "cap", &jpg)], VERSION),
                file(),
            )]),
            "twice",
        ),
        (
            "id out of range",
            raw_bundle(&[(
                MANIFEST_ENTRY,
                manifest_json(&[(u64::MAX, "hat", &jpg)], VERSION),
                file(),
            )]),
            "out of range",
        ),
        (
            "reserved label",
            raw_bundle(&[(
                MANIFEST_ENTRY,
                manifest_json(&[(1, "unknown", &jpg)], VERSION),
                file(),
            )]),
            "sample 1",
        ),
        (
            "label not normal",
            raw_bundle(&[(
                MANIFEST_ENTRY,
                manifest_json(&[(1, "cafe\u{301}", &jpg)], VERSION),
                file(),
            )]),
            "normal form",
        ),
        (
            "wrong digest",
            raw_bundle(&[
                (
                    MANIFEST_ENTRY,
                    manifest_json(&[(1, "hat", b"other")], VERSION),
                    file(),
                ),
                ("samples/1.jpg", jpg.clone(), file()),
            ]),
            "digest",
        ),
        (
            "not an image",
            raw_bundle(&[
                (
                    MANIFEST_ENTRY,
                    manifest_json(&[(1, "hat", b"not a jpeg")], VERSION),
                    file(),
                ),
                ("samples/1.jpg", b"not a jpeg".to_vec(), file()),
            ]),
            "image",
        ),
        (
            "not a bundle",
            b"hello, this is not gzip".to_vec(),
            "cannot be read",
        ),
        ("empty", raw_bundle(&[]), "empty"),
    ];
    for (what, bytes, expect) in cases {
        let why = refusal(&bytes);
        assert!(why.contains(expect), "{what}: {why}");
    }
}

#[test]
fn sizes_are_refused_before_inflating() {
    let jpg = fixture("hat-1");
    // An image entry larger than learn.max_image_bytes: refused on its header.
    let big = vec![0u8; 9 << 20];
    let why = refusal(&raw_bundle(&[
        (
            MANIFEST_ENTRY,
            manifest_json(&[(1, "hat", &big)], VERSION),
            file(),
        ),
        ("samples/1.jpg", big, file()),
    ]));
    assert!(why.contains("more than the limit"), "{why}");
    // A bundle that inflates beyond the total limit (a bomb of zeros in a
    // head entry, which is otherwise skipped).
    let bomb = one_sample(vec![(HEAD_ENTRY, vec![0u8; 40 << 20], file())]);
    assert!(bomb.len() < 1 << 20, "compresses well: {}", bomb.len());
    let tmp = tempfile::tempdir().expect("tempdir");
    let small = ImportLimits {
        max_bytes: 4 << 20,
        ..limits()
    };
    match stage(
        bomb.as_slice(),
        &small,
        &tmp.path().join("s"),
        None,
        Mode::New,
    ) {
        Err(BundleError::Refused(why)) => assert!(why.contains("beyond its limit"), "{why}"),
        other => panic!("{other:?}"),
    }
    // More samples or classes than the board takes.
    let many: Vec<(u64, String, Vec<u8>)> =
        (1..=3).map(|i| (i, format!("c{i}"), jpg.clone())).collect();
    let refs: Vec<(u64, &str, &[u8])> = many
        .iter()
        .map(|(i, l, j)| (*i, l.as_str(), j.as_slice()))
        .collect();
    let json = manifest_json(&refs, VERSION);
    for (l, expect) in [
        (
            ImportLimits {
                max_samples: 2,
                ..limits()
            },
            "max_samples",
        ),
        (
            ImportLimits {
                max_classes: 2,
                ..limits()
            },
            "max_classes",
        ),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let b = raw_bundle(&[(MANIFEST_ENTRY, json.clone(), file())]);
        match stage(b.as_slice(), &l, &tmp.path().join("s"), None, Mode::New) {
            Err(BundleError::Refused(why)) => assert!(why.contains(expect), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn truncated_and_mutated_bundles_never_panic_nor_touch_the_local_store() {
    let src = tempfile::tempdir().expect("tempdir");
    store_with(src.path(), &IMAGES);
    let good = export_bytes(src.path());
    let local = tempfile::tempdir().expect("tempdir");
    store_with(local.path(), &IMAGES[..1]);
    let before = snapshot(local.path());
    let mut rng = fastrand::Rng::with_seed(0xB0D1E);
    let mut refused = 0;
    for i in 0..300 {
        let mut bytes = good.clone();
        if i % 3 == 0 {
            bytes.truncate(rng.usize(..bytes.len()));
        } else {
            for _ in 0..rng.usize(1..=4) {
                let at = rng.usize(..bytes.len());
                bytes[at] ^= 1 << rng.u8(0..8);
            }
        }
        let (_tmp, r) = stage_into(&bytes, Some(local.path()), Mode::Merge);
        if r.is_err() {
            refused += 1;
        }
    }
    // Nearly every change breaks the gzip CRC, a digest or an image.
    assert!(refused > 250, "only {refused} of 300 refused");
    assert_eq!(snapshot(local.path()), before);
}

#[test]
fn extension_entries_are_refused_not_read_whole() {
    // A GNU long-name entry would be read whole by the archive and name the
    // next entry; in a bundle it is an entry like any other, and refused.
    let jpg = fixture("hat-1");
    let why = refusal(&raw_bundle(&[
        (
            MANIFEST_ENTRY,
            manifest_json(&[(1, "hat", &jpg)], VERSION),
            file(),
        ),
        (
            "././@LongLink",
            b"samples/1.jpg\0".to_vec(),
            tar::EntryType::GNULongName,
        ),
        ("x", jpg, file()),
    ]));
    assert!(why.contains("not a regular file"), "{why}");
}

#[test]
fn the_manifest_limit_follows_the_sample_limit() {
    // 2 MiB of padding in bundle.json for a board that takes 100 samples.
    let jpg = fixture("hat-1");
    let mut m: serde_json::Value =
        serde_json::from_slice(&manifest_json(&[(1, "hat", &jpg)], VERSION)).expect("json");
    m["padding"] = serde_json::Value::String("x".repeat(2 << 20));
    let why = refusal(&raw_bundle(&[
        (
            MANIFEST_ENTRY,
            serde_json::to_vec(&m).expect("json"),
            file(),
        ),
        ("samples/1.jpg", jpg, file()),
    ]));
    assert!(why.contains("more than the limit"), "{why}");
    assert!(manifest_limit(100) < 2 << 20);
    assert_eq!(manifest_limit(usize::MAX), MAX_MANIFEST_BYTES);
}

#[test]
fn labels_join_the_class_they_name_without_regard_to_case() {
    let hat = fixture("hat-1");
    let hat2 = fixture("hat-2");
    let bundle = raw_bundle(&[
        (
            MANIFEST_ENTRY,
            manifest_json(&[(1, "Cat", &hat), (2, "cat", &hat2)], VERSION),
            file(),
        ),
        ("samples/1.jpg", hat, file()),
        ("samples/2.jpg", hat2, file()),
    ]);
    let (tmp, r) = stage_into(&bundle, None, Mode::New);
    assert_eq!(r.expect("staged").classes, 1);
    let (to, _) = Store::open(&staged_dir(&tmp)).expect("open staged");
    assert_eq!(to.classes(), vec![("Cat".to_string(), 2)]);
    // Merged into a store that has `hat`, a bundle's `HAT` joins it.
    let local = tempfile::tempdir().expect("tempdir");
    store_with(local.path(), &IMAGES[..1]);
    let pants = fixture("pants-1");
    let upper = raw_bundle(&[
        (
            MANIFEST_ENTRY,
            manifest_json(&[(1, "HAT", &pants)], VERSION),
            file(),
        ),
        ("samples/1.jpg", pants, file()),
    ]);
    let (tmp, r) = stage_into(&upper, Some(local.path()), Mode::Merge);
    assert_eq!(r.expect("merged").classes, 1);
    let (to, _) = Store::open(&staged_dir(&tmp)).expect("open staged");
    assert_eq!(to.classes(), vec![("hat".to_string(), 2)]);
}

#[test]
fn an_image_that_is_not_a_jpeg_is_refused() {
    let img = image::RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    let why = refusal(&raw_bundle(&[
        (
            MANIFEST_ENTRY,
            manifest_json(&[(1, "hat", &png)], VERSION),
            file(),
        ),
        ("samples/1.jpg", png, file()),
    ]));
    assert!(why.contains("not a JPEG"), "{why}");
}

#[test]
fn a_merge_or_replace_keeps_the_recent_crops() {
    let local = tempfile::tempdir().expect("tempdir");
    let recent = local.path().join(crate::store::RECENT);
    fs::create_dir_all(&recent).expect("mkdir");
    fs::write(recent.join("7.jpg"), fixture("hat-1")).expect("write");
    fs::write(recent.join("index.json"), b"[]").expect("write");
    let staging = tempfile::tempdir().expect("tempdir");
    keep_recent(local.path(), staging.path()).expect("kept");
    let kept = staging.path().join(crate::store::RECENT);
    assert_eq!(fs::read(kept.join("7.jpg")).ok(), Some(fixture("hat-1")));
    assert_eq!(fs::read(kept.join("index.json")).ok(), Some(b"[]".to_vec()));
}
