//! Tests of the sample store: round trips, crashes, damage and a full disk.

use std::fs::{self, File};
use std::io::Write;

use super::*;
use crate::store::fsio::is_disk_full;

fn bb(c: char) -> BackboneId {
    BackboneId::new("m".into(), c.to_string().repeat(64), "")
}

#[test]
fn samples_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut s, report) = Store::open(dir.path()).expect("open");
        assert_eq!(report.samples, 0);
        s.add("cat", Origin::Image, b"jpeg1", &bb('a'), &[1.0, 2.0], None)
            .expect("add");
        s.add("dog", Origin::Frame, b"jpeg2", &bb('a'), &[3.0, 4.0], None)
            .expect("add");
        s.add("cat", Origin::Image, b"jpeg3", &bb('a'), &[5.0, 6.0], None)
            .expect("add");
    }
    let (s, report) = Store::open(dir.path()).expect("reopen");
    assert_eq!(report.samples, 3);
    assert_eq!(report.classes, 2);
    assert_eq!(
        s.classes(),
        vec![("cat".to_string(), 2), ("dog".to_string(), 1)]
    );
    assert_eq!(s.load_embedding(2, &bb('a')), Some(vec![3.0, 4.0]));
    assert_eq!(s.load_thumbnail(3).expect("thumb"), b"jpeg3");
    // Another backbone's features are never handed out.
    assert_eq!(s.load_embedding(2, &bb('b')), None);
}

#[test]
fn a_second_daemon_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_s, _) = Store::open(dir.path()).expect("open");
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::Locked(_))
    ));
}

#[test]
fn relabel_merge_delete_and_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = Store::open(dir.path()).expect("open");
    for l in ["a", "b", "a", "c"] {
        s.add(l, Origin::Image, b"x", &bb('a'), &[0.0], None)
            .expect("add");
    }
    assert_eq!(s.relabel("a", "z").expect("rename"), 2);
    assert_eq!(s.relabel("z", "b").expect("merge"), 2);
    assert_eq!(
        s.classes(),
        vec![("b".to_string(), 3), ("c".to_string(), 1)]
    );
    assert_eq!(s.delete_class("c").expect("delete"), 1);
    assert!(!s.embedding_path(4).exists(), "files of deleted samples go");
    assert!(s.remove(1).expect("remove"));
    assert!(!s.remove(1).expect("remove again"));
    assert_eq!(s.reset().expect("reset"), 2);
    assert!(s.is_empty());
    // Ids are never reused.
    let m = s
        .add("d", Origin::Image, b"x", &bb('a'), &[0.0], None)
        .expect("add");
    assert_eq!(m.id, 5);
}

#[test]
fn orphans_of_an_interrupted_write_are_removed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut s, _) = Store::open(dir.path()).expect("open");
        s.add("a", Origin::Image, b"x", &bb('a'), &[0.0], None)
            .expect("add");
    }
    // As if the daemon died after writing sample 2's files but before the manifest.
    let samples = dir.path().join(SAMPLES);
    fs::write(samples.join("000002.jpg"), b"x").expect("write");
    fs::write(samples.join(".000003.emb.tmp"), b"x").expect("write");
    let (s, report) = Store::open(dir.path()).expect("reopen");
    assert_eq!(report.removed_orphans, 2);
    assert_eq!(s.len(), 1);
    assert!(samples.join("000001.jpg").exists());
}

#[test]
fn a_damaged_manifest_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join(MANIFEST), b"{ not json").expect("write");
    let err = Store::open(dir.path()).err().expect("corrupt");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(
        fs::read(dir.path().join(MANIFEST)).expect("read"),
        b"{ not json"
    );
    fs::write(
        dir.path().join(MANIFEST),
        br#"{"format": 9, "next_id": 1, "samples": []}"#,
    )
    .expect("write");
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::TooNew { found: 9, .. })
    ));
}

#[test]
fn damaged_embedding_files_are_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = Store::open(dir.path()).expect("open");
    s.add("a", Origin::Image, b"x", &bb('a'), &[1.0, 2.0], None)
        .expect("add");
    let p = s.embedding_path(1);
    let mut bytes = fs::read(&p).expect("read");
    bytes.truncate(bytes.len() - 2);
    fs::write(&p, bytes).expect("write");
    assert_eq!(s.load_embedding(1, &bb('a')), None);
}

#[test]
fn leftover_temporary_files_at_the_top_are_removed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path()).expect("open"));
    for name in [".samples.json.tmp", ".head.json.tmp", ".write-test"] {
        fs::write(dir.path().join(name), b"half").expect("write");
    }
    fs::write(dir.path().join("notes.txt"), b"user file").expect("write");
    let _s = Store::open(dir.path()).expect("reopen");
    for name in [".samples.json.tmp", ".head.json.tmp", ".write-test"] {
        assert!(!dir.path().join(name).exists(), "{name} left behind");
    }
    assert!(
        dir.path().join("notes.txt").exists(),
        "a file edgehead did not write was removed"
    );
}

#[test]
fn head_versions_are_never_reused_even_after_a_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = Store::open(dir.path()).expect("open");
    assert_eq!(s.next_head_version(), 1);
    let mut h = crate::head::tests::tiny_head(&bb('a'));
    h.version = 4;
    s.save_head(&h).expect("save");
    assert_eq!(s.next_head_version(), 5);
    s.reset().expect("reset");
    assert_eq!(
        s.next_head_version(),
        5,
        "reset forgot the versions handed out"
    );
    drop(s);
    let (s, _) = Store::open(dir.path()).expect("reopen");
    assert_eq!(s.next_head_version(), 5);
}

#[test]
fn names_left_without_files_by_an_interrupted_delete_are_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut s, _) = Store::open(dir.path()).expect("open");
        for l in ["a", "b"] {
            s.add(l, Origin::Image, b"x", &bb('a'), &[0.0], None)
                .expect("add");
        }
        // As if killed after removing sample 1's files, before the manifest.
        s.remove_files(&[1]);
    }
    let (s, report) = Store::open(dir.path()).expect("reopen");
    assert_eq!(report.dropped_missing, vec![1]);
    assert_eq!(
        s.samples().iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![2]
    );
}

#[test]
fn a_manifest_without_most_of_its_files_is_kept_not_emptied() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut s, _) = Store::open(dir.path()).expect("open");
        for l in ["a", "b", "c"] {
            s.add(l, Origin::Image, b"x", &bb('a'), &[0.0], None)
                .expect("add");
        }
    }
    // samples/ lost (a manifest restored without it): keep every name.
    fs::remove_dir_all(dir.path().join(SAMPLES)).expect("rm");
    let (s, report) = Store::open(dir.path()).expect("reopen");
    assert!(report.dropped_missing.is_empty());
    assert_eq!(s.len(), 3);
    assert_eq!(report.missing_thumbnails, vec![1, 2, 3]);
}

#[test]
fn a_failed_add_never_hands_its_id_out_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = Store::open(dir.path()).expect("open");
    s.add("a", Origin::Image, b"x", &bb('a'), &[0.0], None)
        .expect("add");
    // Make the next thumbnail write fail: a directory where the file goes.
    fs::create_dir(s.thumbnail_path(2)).expect("mkdir");
    assert!(s
        .add("b", Origin::Image, b"x", &bb('a'), &[0.0], None)
        .is_err());
    fs::remove_dir(s.thumbnail_path(2)).expect("rmdir");
    let m = s
        .add("b", Origin::Image, b"x", &bb('a'), &[0.0], None)
        .expect("add");
    assert_eq!(m.id, 3);
    assert_eq!(s.len(), 2);
}

#[test]
fn the_same_image_is_found_in_its_class_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = Store::open(dir.path()).expect("open");
    s.add(
        "a",
        Origin::Image,
        b"x",
        &bb('a'),
        &[0.0],
        Some("f00d".into()),
    )
    .expect("add");
    assert_eq!(s.find_image("a", "f00d").map(|m| m.id), Some(1));
    assert!(s.find_image("b", "f00d").is_none());
    assert!(s.find_image("a", "beef").is_none());
}

/// A real full disk: a 4 MiB tmpfs (needs root, as CI runs).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }

    /// Fill the file system up with a file named `fill`.
    fn fill(&self) {
        let mut f = File::create(self.0.path().join("fill")).expect("create");
        let chunk = vec![1u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        // Whatever single blocks are left.
        let mut g = File::create(self.0.path().join("fill2")).expect("create");
        while g.write_all(&[1u8; 512]).is_ok() {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn on_a_full_disk_adding_fails_cleanly_deleting_works_and_the_store_opens() {
    let Some(fs_) = Tmpfs::mount() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount a tmpfs"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let state = fs_.0.path().join("state");
    let jpeg = vec![7u8; 20_000];
    {
        let (mut s, report) = Store::open(&state).expect("open");
        assert!(!report.disk_full);
        for l in ["a", "a", "b", "c"] {
            s.add(l, Origin::Image, &jpeg, &bb('a'), &[0.5; 1280], None)
                .expect("add");
        }
        fs_.fill();
        let before = s.samples().to_vec();
        let err = s
            .add("a", Origin::Image, &jpeg, &bb('a'), &[0.5; 1280], None)
            .expect_err("the disk is full");
        assert!(is_disk_full(&err), "{err}");
        assert_eq!(s.samples(), &before[..], "a failed add changed the store");
        let names: Vec<String> = fs::read_dir(state.join(SAMPLES))
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names.len(),
            8,
            "files of the failed add left behind: {names:?}"
        );
        assert!(s.remove(1).expect("remove on a full disk"));
        assert_eq!(s.delete_class("b").expect("delete on a full disk"), 1);
        assert_eq!(s.len(), 2);
    }
    // Full again, and the daemon's store still opens, saying so.
    fs_.fill();
    let (s, report) = Store::open(&state).expect("open on a full disk");
    assert!(report.disk_full);
    assert_eq!(s.len(), 2);
    assert_eq!(
        s.samples().iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![2, 4]
    );
}
