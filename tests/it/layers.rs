//! The module layering written in `src/lib.rs` holds: every `crate::<module>`
//! path in a file of `src/` names a module on a lower layer than the file's own
//! (or its own module). Comments are skipped: a doc link is not an import.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::harness::root;

/// `layer N: a b c` lines of lib.rs's documentation → module → layer.
fn layers(lib: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim_start_matches("//!").trim().strip_prefix("layer ") else {
            continue;
        };
        let Some((n, modules)) = rest.split_once(':') else {
            continue;
        };
        let n: usize = n.trim().parse().expect("a layer number");
        for m in modules.split_whitespace() {
            out.insert(m.to_string(), n);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules a file's code names with `crate::`.
fn uses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                // `use crate::{a, b}`: every name in the braces.
                if let Some(list) = after.strip_prefix('{') {
                    let inner = list.split('}').next().unwrap_or("");
                    out.extend(inner.split(',').filter_map(|p| {
                        let n = p.trim().split("::").next()?.trim();
                        (!n.is_empty()).then(|| n.to_string())
                    }));
                }
            } else {
                out.push(name);
            }
            rest = after;
        }
    }
    out
}

#[test]
fn no_module_imports_from_its_own_layer_or_above() {
    let src = root().join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let layer = layers(&lib);
    assert!(layer.len() > 10, "lib.rs names the layers: {layer:?}");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src").to_path_buf();
        let own = rel
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .unwrap_or_default();
        if own == "lib" || own == "main" {
            continue;
        }
        let Some(&mine) = layer.get(&own) else {
            wrong.push(format!(
                "{}: module {own} is on no layer in lib.rs",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read");
        for used in uses(&text) {
            if used == own {
                continue;
            }
            match layer.get(&used) {
                Some(&theirs) if theirs < mine => {}
                Some(&theirs) => wrong.push(format!(
                    "{} (layer {mine}) uses crate::{used} (layer {theirs})",
                    rel.display()
                )),
                None => wrong.push(format!(
                    "{} uses crate::{used}, which is on no layer",
                    rel.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_import_scan_sees_paths_and_brace_lists() {
    let text =
        "use crate::{mqtt::Publisher, names};\nlet x = crate::store::fsio::io; // crate::app\n";
    assert_eq!(uses(text), ["mqtt", "names", "store"]);
}
