//! Class names: what a label may contain, how it is normalized, and how it is
//! matched against the classes that exist.
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

use super::{bad, RequestError};
use crate::head::UNKNOWN;
use crate::homeassistant::{UNRECOGNIZED, UNTRAINED};

/// Longest label, in characters (after NFC).
pub const MAX_LABEL_CHARS: usize = 64;

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

/// Check a label and return its normalized form (NFC).
///
/// Accepted: 1 to [`MAX_LABEL_CHARS`] characters that are letters, combining marks
/// or digits of any script (Unicode general categories L, M, N), spaces, `-`, `_`
/// and `.`; no leading dot, no leading or trailing space, a letter or digit
/// somewhere, and not one of [`RESERVED`]. The error says which rule failed.
pub fn normalize(label: &str) -> Result<String, RequestError> {
    let label: String = label.nfc().collect();
    if label.is_empty() {
        return Err(bad("the label is empty"));
    }
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(bad(format!(
            "the label is longer than {MAX_LABEL_CHARS} characters"
        )));
    }
    if label.trim() != label || label.starts_with('.') {
        return Err(bad(
            "the label must not start with a dot or start or end with a space",
        ));
    }
    if let Some(c) = label.chars().find(|c| !allowed(*c)) {
        return Err(bad(format!(
            "the label contains {c:?}; use letters, marks and digits of any script, spaces, - _ and ."
        )));
    }
    if !label.chars().any(|c| {
        matches!(
            c.general_category_group(),
            GeneralCategoryGroup::Letter | GeneralCategoryGroup::Number
        )
    }) {
        return Err(bad("the label needs at least one letter or digit"));
    }
    if let Some(r) = RESERVED.iter().find(|r| same(&label, r)) {
        return Err(bad(format!(
            "\"{r}\" is reserved (edgehead and Home Assistant use it for \"no class\" or \"no state\")"
        )));
    }
    Ok(label)
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
        ] {
            assert_eq!(normalize(ok).as_deref(), Ok(ok), "{ok}");
        }
        // Decomposed é (as macOS sends it) becomes the composed one.
        assert_eq!(normalize("cafe\u{301}").as_deref(), Ok("caf\u{e9}"));
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
            assert!(normalize(refused).is_err(), "{refused:?} accepted");
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
