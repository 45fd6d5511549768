//! The shared vocabulary: what a label (a class name) or a classifier name may
//! contain, how it is normalized and matched, the words reserved for states that
//! are not classes, and the ASCII slugs and digests names become in Home
//! Assistant ids and topics. A leaf module: it imports nothing of edgehead.
//!
//! A label becomes a Home Assistant state, an MQTT topic level and a JSON string,
//! so it must be safe in all three and must not collide with the states Home
//! Assistant treats as special. Text arrives from every kind of client: macOS sends
//! decomposed `café` (`e` + U+0301), Hindi needs combining marks (`बिल्ली`), and a
//! user typing `Cat` means the class `cat`. So labels are normalized to Unicode NFC
//! (UAX #15), may hold letters, marks and digits of any script, and are compared
//! case-insensitively, keeping the first spelling.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

/// The label a prediction carries when the frame is far from every class.
pub const UNKNOWN: &str = "unknown";
/// The state shown for edgehead's `unknown` (a crop that matches no class well
/// enough): a real state, unlike Home Assistant's own `unknown` ("no data").
pub const UNRECOGNIZED: &str = "unrecognized";
/// The state shown while the classifier has no head (nothing taught yet).
pub const UNTRAINED: &str = "untrained";

/// Longest label, in characters (after NFC).
pub const MAX_LABEL_CHARS: usize = 64;

/// Most combining marks in a row after one letter or digit (after NFC). Writing
/// needs few: Thai stacks a vowel and a tone mark (`ผู้`: 2), Vietnamese keeps at
/// most one after NFC, Tibetan stacks up to 4; more is "Zalgo" text that draws
/// over the neighbouring lines of a dashboard.
pub const MAX_MARKS_IN_A_ROW: usize = 4;

/// Names a class may not have: edgehead's own `unknown` (a frame that matches no
/// class), the values Home Assistant reads as "no state" (`unknown`,
/// `unavailable`) or as null in templates (`none`, `null`), and the label sensor's
/// states that are not classes ([`UNRECOGNIZED`], [`UNTRAINED`]). Compared
/// without case.
pub const RESERVED: &[&str] = &[
    UNKNOWN,
    "unavailable",
    "none",
    "null",
    UNRECOGNIZED,
    UNTRAINED,
];

/// The classifier built in when the configuration names none: the whole frame.
pub const DEFAULT_CLASSIFIER: &str = "default";

/// Names a classifier may not have: the device-level topic levels beside the
/// classifiers' (`<base>/<name>/...`).
pub const RESERVED_CLASSIFIER_NAMES: &[&str] = &[
    "availability",
    "status",
    "request",
    "response",
    "prediction",
    "head",
    "classifiers",
];

/// Longest classifier name in bytes of UTF-8: it is a directory name (255 bytes on
/// Linux file systems), with room to spare for temporary names.
pub const MAX_CLASSIFIER_NAME_BYTES: usize = 200;

/// Why a label or a name was refused; the text says which rule failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LabelError(pub String);

fn refuse(msg: impl Into<String>) -> LabelError {
    LabelError(msg.into())
}

/// Check a label and return its normalized form (NFC).
///
/// Accepted: 1 to [`MAX_LABEL_CHARS`] characters that are letters, combining marks
/// or digits of any script (Unicode general categories L, M, N), spaces, `-`, `_`
/// and `.`; no leading dot, no leading or trailing space, a letter or digit
/// somewhere, and not one of [`RESERVED`]. A label that makes a new class must
/// also pass [`check_new_label`]. The error says which rule failed.
pub fn normalize_label(label: &str) -> Result<String, LabelError> {
    let label: String = label.nfc().collect();
    if label.is_empty() {
        return Err(refuse("the label is empty"));
    }
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(refuse(format!(
            "the label is longer than {MAX_LABEL_CHARS} characters"
        )));
    }
    if label.trim() != label || label.starts_with('.') {
        return Err(refuse(
            "the label must not start with a dot or start or end with a space",
        ));
    }
    if let Some(c) = label.chars().find(|c| !allowed(*c)) {
        return Err(refuse(format!(
            "the label contains {c:?}; use letters, marks and digits of any script, spaces, - _ and ."
        )));
    }
    if !label.chars().any(letter_or_digit) {
        return Err(refuse("the label needs at least one letter or digit"));
    }
    if let Some(r) = RESERVED.iter().find(|r| same(&label, r)) {
        return Err(refuse(format!(
            "\"{r}\" is reserved (edgehead and Home Assistant use it for \"no class\" or \"no state\")"
        )));
    }
    Ok(label)
}

/// The further rules for a label that would make a **new** class (a normalized
/// label, [`normalize_label`]): it begins with a letter or a digit (not a mark,
/// a symbol or `_`), and no character carries more than [`MAX_MARKS_IN_A_ROW`]
/// combining marks. Classes made before these rules keep working: only new ones
/// are checked. The error says which rule failed.
pub fn check_new_label(label: &str) -> Result<(), LabelError> {
    if !label.chars().next().is_some_and(letter_or_digit) {
        return Err(refuse(format!(
            "a new class must begin with a letter or a digit: {label:?}"
        )));
    }
    let mut marks = 0;
    for c in label.chars() {
        marks = if is_mark(c) { marks + 1 } else { 0 };
        if marks > MAX_MARKS_IN_A_ROW {
            return Err(refuse(format!(
                "a new class may stack at most {MAX_MARKS_IN_A_ROW} combining marks on one character"
            )));
        }
    }
    Ok(())
}

fn letter_or_digit(c: char) -> bool {
    matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Letter | GeneralCategoryGroup::Number
    )
}

fn is_mark(c: char) -> bool {
    c.general_category_group() == GeneralCategoryGroup::Mark
}

fn allowed(c: char) -> bool {
    matches!(c, ' ' | '-' | '_' | '.')
        || matches!(
            c.general_category_group(),
            GeneralCategoryGroup::Letter
                | GeneralCategoryGroup::Mark
                | GeneralCategoryGroup::Number
        )
}

/// Check a classifier name: the label rules ([`normalize_label`]), at most
/// [`MAX_CLASSIFIER_NAME_BYTES`] of UTF-8 (it names a directory), and none of
/// [`RESERVED_CLASSIFIER_NAMES`] (it is a topic level beside them). Returns the
/// normalized name.
pub fn normalize_classifier_name(name: &str) -> Result<String, LabelError> {
    let n = normalize_label(name).map_err(|e| refuse(format!("{name:?}: {e}")))?;
    if n.len() > MAX_CLASSIFIER_NAME_BYTES {
        return Err(refuse(format!(
            "{n:?} is {} bytes of UTF-8; a directory name allows {MAX_CLASSIFIER_NAME_BYTES}",
            n.len()
        )));
    }
    if RESERVED_CLASSIFIER_NAMES.iter().any(|r| same(r, &n)) {
        return Err(refuse(format!("{n:?} is reserved for device-level topics")));
    }
    Ok(n)
}

/// Whether two normalized labels name the same class (case-insensitive, by
/// Unicode lowercase mapping).
pub fn same(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// The existing class `label` names, spelled as it was first taught; `None` when
/// no class matches. An exact match wins (a store from an older edgehead may hold
/// both `Cat` and `cat`); otherwise classes are compared in NFC without case.
pub fn existing<'c>(
    label: &str,
    classes: impl IntoIterator<Item = &'c str> + Clone,
) -> Option<&'c str> {
    let label: String = label.nfc().collect();
    if let Some(c) = classes
        .clone()
        .into_iter()
        .find(|c| *c == label || c.nfc().eq(label.chars()))
    {
        return Some(c);
    }
    let wanted = label.to_lowercase();
    classes
        .into_iter()
        .find(|c| c.nfc().collect::<String>().to_lowercase() == wanted)
}

/// Characters allowed in a device id, a topic segment and a file name alike:
/// 1 to 64 of `A-Z a-z 0-9 - _`.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Whether `t` can prefix MQTT topics: not empty, no wildcard (`+`, `#`), no NUL
/// and no empty level (MQTT 5.0, 4.7).
pub fn valid_topic_prefix(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#', '\0']) && t.split('/').all(|level| !level.is_empty())
}

/// `name` made safe for Home Assistant's discovery topics and entity ids
/// (`[a-z0-9_]`): other characters become `_`, and a name that changed gets 8 hex
/// digits of its SHA-256 so that `garage door` and `garage_door` stay apart.
pub fn slug(name: &str) -> String {
    let s = ascii_slug(name);
    if s == name {
        s
    } else {
        format!("{s}_{}", hex_digest(name, 4))
    }
}

/// `name` with ASCII letters lower-cased, ASCII digits kept and every other
/// character replaced by `_` (one `_` per character).
pub fn ascii_slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The first `bytes` bytes of the SHA-256 of `name`, in lower-case hex.
pub fn hex_digest(name: &str, bytes: usize) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(name.as_bytes())
        .iter()
        .take(bytes)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_any_script_are_accepted_and_normalized() {
        for ok in [
            "cat",
            "Katze 2",
            "über-dog",
            "a.b_c",
            "猫",
            "बिल्ली",
            "ক্যাট",
            "кот",
            "ผู้ใหญ่",
            "བསྒྲུབས",
            "tiếng việt",
            "2nd door",
            &format!("x{}", "\u{301}\u{302}\u{303}\u{304}"),
        ] {
            assert_eq!(normalize_label(ok).as_deref(), Ok(ok), "{ok}");
        }
        // Decomposed é (as macOS sends it) becomes the composed one.
        assert_eq!(normalize_label("cafe\u{301}").as_deref(), Ok("caf\u{e9}"));
    }

    #[test]
    fn unsafe_empty_and_reserved_labels_are_refused() {
        for refused in [
            "",
            " cat",
            "cat ",
            "../etc",
            "a/b",
            "x+y",
            "#",
            "+",
            ".hidden",
            "Unknown",
            "unavailable",
            "Unrecognized",
            "untrained",
            "None",
            "NULL",
            "tab\there",
            "\u{301}",
            "-_-",
            &"x".repeat(65),
        ] {
            assert!(normalize_label(refused).is_err(), "{refused:?} accepted");
        }
    }

    #[test]
    fn a_new_class_begins_with_a_letter_or_digit_and_stacks_few_marks() {
        for refused in [
            "\u{301}door",
            "\u{e49}\u{e39}door",
            "_door",
            "-door",
            &format!("x{}", "\u{301}\u{302}\u{303}\u{304}\u{305}"),
            &format!("door{}", "\u{301}".repeat(40)),
        ] {
            // Valid as a name of a class made earlier, refused for a new one.
            let n = normalize_label(refused);
            assert!(
                n.is_err() || check_new_label(&n.clone().unwrap_or_default()).is_err(),
                "{refused:?} accepted as a new class"
            );
        }
        assert!(
            normalize_label("_background").is_ok(),
            "old classes stay usable"
        );
        assert!(check_new_label("_background").is_err());
        for ok in ["ผู้ใหญ่", "བསྒྲུབས", "2nd door", "tiếng việt"] {
            let n = normalize_label(ok).expect(ok);
            assert!(check_new_label(&n).is_ok(), "{ok}");
        }
        let four =
            normalize_label(&format!("x{}", "\u{301}\u{302}\u{303}\u{304}")).expect("4 marks");
        assert!(check_new_label(&four).is_ok());
    }

    #[test]
    fn slugs_are_safe_for_home_assistant_and_keep_names_apart() {
        assert_eq!(slug("garage_door"), "garage_door");
        let spaced = slug("garage door");
        assert!(spaced.starts_with("garage_door_") && spaced.len() == "garage_door_".len() + 8);
        assert_ne!(spaced, slug("garage.door"));
        assert!(slug("Tür")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn topic_prefixes_reject_wildcards_and_empty_levels() {
        assert!(valid_topic_prefix("edgehead"));
        assert!(valid_topic_prefix("home/edgehead"));
        for bad in ["", "a/+/b", "a/#", "a//b", "/a"] {
            assert!(!valid_topic_prefix(bad), "{bad:?}");
        }
    }

    #[test]
    fn classes_match_without_case_and_keep_the_first_spelling() {
        let classes = ["cat", "Dog", "Éclair"];
        assert_eq!(existing("Cat", classes), Some("cat"));
        assert_eq!(existing("DOG", classes), Some("Dog"));
        assert_eq!(existing("éclair", classes), Some("Éclair"));
        assert_eq!(existing("bird", classes), None);
        // Both spellings from an older, case-sensitive store stay reachable.
        let old = ["Cat", "cat", "cafe\u{301}"];
        assert_eq!(existing("cat", old), Some("cat"));
        assert_eq!(existing("Cat", old), Some("Cat"));
        assert_eq!(existing("CAF\u{c9}", old), Some("cafe\u{301}"));
    }
}
