//! The module layering holds: everything under `src/core/` is pure (no clock, environment,
//! files, network or runtime) and uses only `core`, and no two modules of the library import
//! each other, directly or around a loop. Read from the source, so a change that breaks the
//! layering fails here with the file and the offending line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = crate::common::files_under(dir);
    files.retain(|p| p.extension().is_some_and(|x| x == "rs"));
    files
}

/// The code of a file without its `#[cfg(test)]` tail and without comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `src/observe/gpu.rs` → `observe::gpu`; `src/core/mod.rs` → `core`.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap().with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|c| c != "mod")
        .collect();
    parts.join("::")
}

/// Modules with children are nodes per child (`observe::gpu`), others per file.
fn node(path_after_crate: &str, nested: &BTreeSet<String>) -> String {
    let mut parts = path_after_crate.split("::");
    let top = parts.next().unwrap_or("");
    match parts.next() {
        Some(child) if nested.contains(top) && child.starts_with(|c: char| c.is_lowercase()) => {
            format!("{top}::{child}")
        }
        _ => top.to_string(),
    }
}

const IMPURE: &[&str] = &[
    "tokio",
    "reqwest",
    "axum",
    "std::fs",
    "std::env",
    "Instant::now",
    "SystemTime",
    "std::net",
    "std::process",
];

#[test]
fn the_core_is_pure_and_depends_only_on_itself() {
    let files = rust_files(&src().join("core"));
    assert!(!files.is_empty(), "no files under src/core");
    let mut found = Vec::new();
    for f in &files {
        for (i, line) in code(f).lines().enumerate() {
            for word in IMPURE {
                if line.contains(word) {
                    found.push(format!(
                        "{}:{}: uses {word}: {}",
                        f.display(),
                        i + 1,
                        line.trim()
                    ));
                }
            }
            for (at, _) in line.match_indices("crate::") {
                if !line[at..].starts_with("crate::core") {
                    found.push(format!(
                        "{}:{}: core reaches out of core: {}",
                        f.display(),
                        i + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_library_has_no_import_cycles() {
    let mut files = rust_files(&src());
    // The binary's own modules are not the library's.
    files.retain(|f| {
        let m = module_of(f);
        m != "main" && m != "args" && m != "deployed" && m != "lib"
    });
    let nested: BTreeSet<String> = files
        .iter()
        .filter(|f| f.ends_with("mod.rs"))
        .map(|f| module_of(f))
        .collect();
    let nodes: BTreeSet<String> = files.iter().map(|f| node(&module_of(f), &nested)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = node(&module_of(f), &nested);
        let code = code(f);
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let to = node(path.trim_end_matches(':'), &nested);
            if to != from && nodes.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
        assert!(
            !code.contains("crate::{"),
            "{}: grouped `crate::{{…}}` imports hide edges from this check",
            f.display()
        );
    }
    // A cycle exists iff some module reaches itself.
    let mut cycles = Vec::new();
    for start in &nodes {
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    cycles.push(format!("{} -> {start}", trail.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    cycles.sort();
    cycles.dedup();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}
