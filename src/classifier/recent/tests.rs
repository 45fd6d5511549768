//! Tests of the recent crops: what is worth keeping, bounds, persistence, groups.

use std::time::{Duration, Instant, SystemTime};

use super::*;

#[test]
fn keeps_what_is_worth_a_label_bounded_and_spaced() {
    let mut r = Recent::new(RecentConfig {
        size: 3,
        below_confidence: 0.6,
        min_gap_secs: 10.0,
        ..RecentConfig::default()
    });
    let t0 = Instant::now();
    let at = SystemTime::now();
    assert_eq!(
        r.worth(true, false, false, Some(0.9), t0),
        Some(Reason::First)
    );
    assert_eq!(r.worth(false, false, false, Some(0.9), t0), None);
    assert_eq!(
        r.worth(false, true, false, Some(0.9), t0),
        Some(Reason::LabelChanged)
    );
    assert_eq!(
        r.worth(false, false, false, Some(0.3), t0),
        Some(Reason::LowConfidence)
    );
    assert_eq!(r.worth(false, false, true, None, t0), Some(Reason::Unknown));
    r.push(
        Reason::LowConfidence,
        at,
        Some("a".into()),
        0.3,
        vec![1],
        Vec::new(),
        t0,
    );
    // Spaced: another doubtful crop within 10 s is not kept; a label change is.
    assert_eq!(
        r.worth(false, false, true, None, t0 + Duration::from_secs(5)),
        None
    );
    assert_eq!(
        r.worth(false, true, false, Some(0.9), t0 + Duration::from_secs(5)),
        Some(Reason::LabelChanged)
    );
    assert_eq!(
        r.worth(false, false, true, None, t0 + Duration::from_secs(10)),
        Some(Reason::Unknown)
    );
    let ids: Vec<u64> = (0..4)
        .map(|i| r.push(Reason::LabelChanged, at, None, 0.0, vec![i], Vec::new(), t0))
        .collect();
    assert_eq!(r.len(), 3);
    assert_eq!(
        r.list().iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[3], ids[2], ids[1]]
    );
    assert!(r.get(ids[0]).is_none());
    assert!(r.remove(ids[2]));
    assert!(!r.remove(ids[2]));
    assert_eq!(r.len(), 2);
    // Ids are unique across classifiers' lists.
    let mut other = Recent::new(RecentConfig::default());
    let theirs = other.push(Reason::First, at, None, 0.0, vec![0], Vec::new(), t0);
    assert!(r.get(theirs).is_none() && !ids.contains(&theirs));
    let none = Recent::new(RecentConfig {
        size: 0,
        ..RecentConfig::default()
    });
    assert_eq!(none.worth(true, true, true, None, t0), None);
}

#[test]
fn the_list_survives_a_restart_and_stays_within_its_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = RecentConfig {
        size: 10,
        max_bytes: 64 << 10,
        ..RecentConfig::default()
    };
    let (at, t0) = (SystemTime::now(), Instant::now());
    let mut r = Recent::new(config);
    r.keep_in(dir.path().join("recent"));
    let a = r.push(
        Reason::First,
        at,
        Some("a".into()),
        0.9,
        vec![1; 30_000],
        vec![1.0, 0.0],
        t0,
    );
    let b = r.push(
        Reason::LabelChanged,
        at,
        None,
        0.5,
        vec![2; 30_000],
        vec![0.0, 1.0],
        t0,
    );
    // A third crop of 30 kB goes over 64 KiB: the oldest goes.
    let c = r.push(
        Reason::LabelChanged,
        at,
        None,
        0.5,
        vec![3; 30_000],
        vec![0.0, 1.0],
        t0,
    );
    assert_eq!(r.list().iter().map(|e| e.id).collect::<Vec<_>>(), [c, b]);
    assert!(b > a && c > b, "ids grow");
    let mut again = Recent::new(config);
    again.keep_in(dir.path().join("recent"));
    let back = again.list();
    assert_eq!(back.iter().map(|e| e.id).collect::<Vec<_>>(), [c, b]);
    assert_eq!(*back[1].jpeg, vec![2; 30_000]);
    assert_eq!(*back[1].features, vec![0.0, 1.0]);
    assert_eq!(back[1].confidence, 0.5);
    // Ids after a restart are above those on disk.
    let d = again.push(Reason::Unknown, at, None, 0.0, vec![4], Vec::new(), t0);
    assert!(d > c);
    assert!(again.remove(b));
    let mut third = Recent::new(config);
    third.keep_in(dir.path().join("recent"));
    assert_eq!(third.len(), 2);
    assert!(third.get(b).is_none());
    // Smaller bounds at run time: the oldest goes, on disk too.
    third.reconfigure(RecentConfig { size: 1, ..config });
    assert_eq!(third.list().iter().map(|e| e.id).collect::<Vec<_>>(), [d]);
    let mut fourth = Recent::new(config);
    fourth.keep_in(dir.path().join("recent"));
    assert_eq!(fourth.list().iter().map(|e| e.id).collect::<Vec<_>>(), [d]);
}

#[test]
fn near_duplicates_group_together_and_only_distinct_crops_are_kept() {
    let (at, t0) = (SystemTime::now(), Instant::now());
    let mut r = Recent::new(RecentConfig::default());
    let f = |x: f32, y: f32| vec![x, y, 0.1];
    let ids: Vec<u64> = [f(1.0, 0.0), f(0.99, 0.02), f(0.0, 1.0), f(1.0, 0.01)]
        .into_iter()
        .map(|v| r.push(Reason::LabelChanged, at, None, 0.0, vec![0], v, t0))
        .collect();
    let mut oldest_first = r.list();
    oldest_first.reverse();
    assert_eq!(groups(&oldest_first), [0, 0, 1, 0]);
    let (kept, skipped) = distinct(&oldest_first);
    assert_eq!(
        kept.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[0], ids[2]]
    );
    assert_eq!(skipped.len(), 2);
    assert!(cosine(&f(1.0, 0.0), &f(0.99, 0.02)) >= DUPLICATE_COSINE);
    assert!(cosine(&f(1.0, 0.0), &f(0.0, 1.0)) < DUPLICATE_COSINE);
}
