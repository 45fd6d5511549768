//! Classifier definitions changed at run time (from the console or over MQTT),
//! kept in the state directory (`classifiers.json`) and laid over the
//! configuration file's `[[classifiers]]`:
//!
//! - a classifier of the file that was edited or renamed at run time is replaced,
//!   in its place, by its run-time definition; one deleted at run time is left
//!   out;
//! - classifiers created at run time follow the file's, in the order they were
//!   created.
//!
//! So run-time changes win over the file, and a classifier added to the file later
//! appears beside them. The file's entries are known by their name in the file
//! (the built-in `default` when the file has none). To go back to the file's
//! definitions, stop the daemon and remove `classifiers.json`; `print-config`
//! shows the effective list.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::classifiers::{configured, ClassifierConfig};
use crate::names;

/// Version of `classifiers.json`'s format.
pub const FORMAT: u32 = 1;

/// Where an effective classifier's definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The configuration file, unchanged.
    File,
    /// The configuration file's, changed at run time.
    Edited,
    /// Created at run time.
    Created,
}

/// What `classifiers.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeClassifiers {
    pub format: u32,
    /// Classifiers of the file changed at run time, by their name in the file:
    /// the definition now (edited, maybe renamed), or `null` (deleted).
    pub file: BTreeMap<String, Option<ClassifierConfig>>,
    /// Classifiers created at run time, in the order they were created.
    pub created: Vec<ClassifierConfig>,
}

/// Why a run-time change cannot be made to the list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ListError(pub String);

impl RuntimeClassifiers {
    /// The effective classifiers: the file's `list` (the built-in one when empty)
    /// with the run-time changes laid over it, then those created at run time.
    pub fn effective(&self, list: &[ClassifierConfig]) -> Vec<(ClassifierConfig, Origin)> {
        let mut out = Vec::new();
        for c in configured(list) {
            match self.file.get(&c.name) {
                None => out.push((c, Origin::File)),
                Some(None) => {}
                Some(Some(def)) => out.push((def.clone(), Origin::Edited)),
            }
        }
        out.extend(self.created.iter().cloned().map(|c| (c, Origin::Created)));
        out
    }

    /// The name in the file of the effective classifier `name`, if it is the
    /// file's (edited or not).
    fn file_name_of(&self, list: &[ClassifierConfig], name: &str) -> Option<String> {
        configured(list)
            .into_iter()
            .find_map(|c| match self.file.get(&c.name) {
                None if c.name == name => Some(c.name),
                Some(Some(def)) if def.name == name => Some(c.name),
                _ => None,
            })
    }

    /// Whether a classifier named `name` (without regard to case) is effective.
    pub fn has(&self, list: &[ClassifierConfig], name: &str) -> bool {
        self.effective(list)
            .iter()
            .any(|(c, _)| names::same(&c.name, name))
    }

    /// Add the new classifier `def` (created at run time).
    pub fn create(
        &mut self,
        list: &[ClassifierConfig],
        def: ClassifierConfig,
    ) -> Result<(), ListError> {
        if self.has(list, &def.name) {
            return Err(ListError(format!(
                "there is a classifier \"{}\" already",
                def.name
            )));
        }
        self.format = FORMAT;
        self.created.push(def);
        Ok(())
    }

    /// Replace the effective classifier `name` by `def` (an edit, or a rename when
    /// the names differ), in its place.
    pub fn replace(
        &mut self,
        list: &[ClassifierConfig],
        name: &str,
        def: ClassifierConfig,
    ) -> Result<(), ListError> {
        if def.name != name && self.has(list, &def.name) && !names::same(&def.name, name) {
            return Err(ListError(format!(
                "there is a classifier \"{}\" already",
                def.name
            )));
        }
        self.format = FORMAT;
        if let Some(file_name) = self.file_name_of(list, name) {
            self.file.insert(file_name, Some(def));
            return Ok(());
        }
        match self.created.iter_mut().find(|c| c.name == name) {
            Some(c) => {
                *c = def;
                Ok(())
            }
            None => Err(ListError(format!("there is no classifier \"{name}\""))),
        }
    }

    /// Remove the effective classifier `name`.
    pub fn delete(&mut self, list: &[ClassifierConfig], name: &str) -> Result<(), ListError> {
        self.format = FORMAT;
        if let Some(file_name) = self.file_name_of(list, name) {
            self.file.insert(file_name, None);
            return Ok(());
        }
        let before = self.created.len();
        self.created.retain(|c| c.name != name);
        if self.created.len() == before {
            return Err(ListError(format!("there is no classifier \"{name}\"")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str) -> ClassifierConfig {
        ClassifierConfig {
            name: name.into(),
            ..Default::default()
        }
    }

    fn names_of(r: &RuntimeClassifiers, list: &[ClassifierConfig]) -> Vec<(String, Origin)> {
        r.effective(list)
            .into_iter()
            .map(|(c, o)| (c.name, o))
            .collect()
    }

    #[test]
    fn run_time_changes_lie_over_the_file_in_place() {
        let file = vec![def("door"), def("bins")];
        let mut r = RuntimeClassifiers::default();
        r.create(&file, def("gate")).expect("create");
        assert!(
            r.create(&file, def("Door")).is_err(),
            "names differ by more than case"
        );
        let mut door = def("front_door");
        door.recent.size = 5;
        r.replace(&file, "door", door).expect("rename");
        r.delete(&file, "bins").expect("delete");
        assert_eq!(
            names_of(&r, &file),
            [
                ("front_door".to_string(), Origin::Edited),
                ("gate".to_string(), Origin::Created)
            ]
        );
        // Renamed again: the file's entry is still known by its name in the file.
        r.replace(&file, "front_door", def("porch"))
            .expect("rename again");
        r.replace(&file, "gate", def("gate2"))
            .expect("rename a created one");
        assert_eq!(r.file.len(), 2);
        assert_eq!(
            names_of(&r, &file)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>(),
            ["porch", "gate2"]
        );
        assert!(r.delete(&file, "nothing").is_err());
        // A classifier the file adds later appears after the file's others.
        let later = vec![def("door"), def("bins"), def("shed")];
        assert_eq!(
            names_of(&r, &later)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>(),
            ["porch", "shed", "gate2"]
        );
        // What is saved reads back the same.
        let text = serde_json::to_string(&r).expect("json");
        let back: RuntimeClassifiers = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, r);
    }

    #[test]
    fn the_built_in_classifier_can_be_changed_too() {
        let mut r = RuntimeClassifiers::default();
        r.replace(&[], names::DEFAULT_CLASSIFIER, def("porch"))
            .expect("rename default");
        assert_eq!(names_of(&r, &[]), [("porch".to_string(), Origin::Edited)]);
    }
}
