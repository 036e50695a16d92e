//! The module layering holds: everything under `src/core/` is pure (no clock, environment,
//! files, network or runtime) and uses only `core`; no two modules of the library import each
//! other, directly or around a loop; none of the imports in `NEVER` exists. Read from the
//! source, so a change that breaks the layering fails here with the file and the offending
//! line.

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

/// Modules with children are nodes per child (`observe::gpu`), others per file. A path to an
/// item of a module with children that is not a child of its own (`runpod::proxy_url`, a free
/// function in `runpod/mod.rs`) is an edge to the module itself.
fn node(path_after_crate: &str, nested: &BTreeSet<String>, nodes: &BTreeSet<String>) -> String {
    let mut parts = path_after_crate.split("::");
    let top = parts.next().unwrap_or("");
    match parts.next() {
        Some(child) if nested.contains(top) && child.starts_with(|c: char| c.is_lowercase()) => {
            let child = format!("{top}::{child}");
            if nodes.contains(&child) {
                child
            } else {
                top.to_string()
            }
        }
        _ => top.to_string(),
    }
}

/// The import graph of `(module, code)` pairs (`observe::gpu`, `runpod` for a `mod.rs`),
/// `nested` naming the modules with children: every node and the nodes each one uses.
fn graph(
    files: &[(String, String)],
    nested: &BTreeSet<String>,
) -> (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) {
    // Nodes as they are named by their files, then every edge resolved against them.
    let mut nodes = BTreeSet::new();
    for (m, _) in files {
        let mut parts = m.split("::");
        let top = parts.next().unwrap_or("").to_string();
        nodes.insert(match parts.next() {
            Some(child) if nested.contains(&top) => format!("{top}::{child}"),
            _ => top,
        });
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, code) in files {
        let from = node(m, nested, &nodes);
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let to = node(path.trim_end_matches(':'), nested, &nodes);
            if to != from && nodes.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    (nodes, edges)
}

/// Imports that must never exist, as (user, used) top-level modules: data read back never
/// depends on the observer that produced it; a trial never reaches into the RunPod client.
const NEVER: &[(&str, &str)] = &[
    ("report", "observe"),
    ("replay", "observe"),
    ("results", "observe"),
    ("results", "trial"),
    ("trial", "runpod"),
];

/// Edges that break [`NEVER`], as `from -> to`.
fn forbidden(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let top = |n: &str| n.split("::").next().unwrap_or("").to_string();
    let mut out = Vec::new();
    for (from, tos) in edges {
        for to in tos {
            if NEVER.contains(&(top(from).as_str(), top(to).as_str())) {
                out.push(format!("{from} -> {to}"));
            }
        }
    }
    out
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

/// Pure modules outside `core/`: the experiment (spec), the schedule (workload), the tally, the
/// summary and the report's views. Pure as `core` is, and they may use `core`, each other, and the report's
/// data types (re-exported from `core`), but not its writer or readers.
const PURE: &[&str] = &[
    "spec",
    "workload",
    "trial/tally.rs",
    "trial/summary.rs",
    "report/snapshot.rs",
    "report/text.rs",
    "report/dto.rs",
];
const PURE_MAY_USE: &[&str] = &["core", "spec", "workload", "report"];
const REPORT_IO: &[&str] = &[
    "report::load",
    "report::rows",
    "report::results",
    "ResultsDir",
    "RequestWriter",
    "RequestRow",
];

/// What in `code` (of `file`) breaks the purity of a pure module, line by line.
fn impurities(file: &str, code: &str, may_use: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, line) in code.lines().enumerate() {
        let mut bad: Vec<String> = IMPURE
            .iter()
            .chain(REPORT_IO)
            .filter(|w| line.contains(**w))
            .map(|w| format!("uses {w}"))
            .collect();
        for (at, _) in line.match_indices("crate::") {
            let module: String = line[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !may_use.contains(&module.as_str()) {
                bad.push(format!("reaches `crate::{module}`"));
            }
        }
        for b in bad {
            found.push(format!("{file}:{}: {b}: {}", i + 1, line.trim()));
        }
    }
    found
}

#[test]
fn the_pure_modules_outside_core_are_pure_too() {
    let mut files = Vec::new();
    for p in PURE {
        let path = src().join(p);
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else {
            files.push(path);
        }
    }
    // A module's own tests file is its tests.
    files.retain(|f| !f.ends_with("tests.rs"));
    assert!(files.len() >= 12, "{files:?}");
    let found: Vec<String> = files
        .iter()
        .flat_map(|f| impurities(&f.display().to_string(), &code(f), PURE_MAY_USE))
        .collect();
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The purity check sees a pure module reach out: to an IO module, the clock, the report's
/// writer.
#[test]
fn a_planted_impurity_in_a_pure_module_is_caught() {
    let clean = "use crate::core::metrics::Slo;\nuse crate::spec::Phase;\nfn f() {}";
    assert!(impurities("x.rs", clean, PURE_MAY_USE).is_empty());
    for (planted, why) in [
        ("use crate::client::Endpoint;", "reaches `crate::client`"),
        ("use crate::spec_io::parse;", "reaches `crate::spec_io`"),
        ("let t = std::time::Instant::now();", "uses Instant::now"),
        ("use crate::report::ResultsDir;", "uses ResultsDir"),
    ] {
        let found = impurities("x.rs", &format!("{clean}\n{planted}"), PURE_MAY_USE);
        assert_eq!(found.len(), 1, "{planted}: {found:?}");
        assert!(found[0].starts_with(&format!("x.rs:4: {why}")), "{found:?}");
    }
}

#[test]
fn the_library_has_no_import_cycles_and_no_forbidden_imports() {
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
    let sources: Vec<(String, String)> = files.iter().map(|f| (module_of(f), code(f))).collect();
    for (f, (_, code)) in files.iter().zip(&sources) {
        assert!(
            !code.contains("crate::{"),
            "{}: grouped `crate::{{…}}` imports hide edges from this check",
            f.display()
        );
    }
    let (nodes, edges) = graph(&sources, &nested);
    let never = forbidden(&edges);
    assert!(
        never.is_empty(),
        "imports that must not exist:\n{}",
        never.join("\n")
    );
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

/// A planted upward edge to a free function in a `mod.rs` (the kind of edge this check once
/// dropped, `crate::runpod::proxy_url` resolving to no node) is seen as a forbidden import,
/// while paths to a child module's items still resolve to the child.
#[test]
fn a_planted_edge_to_a_free_function_in_a_mod_rs_is_caught() {
    let files: Vec<(String, String)> = [
        ("trial", "pub fn run() { crate::runpod::proxy_url(); }"),
        ("trial::run", "pub fn go() {}"),
        ("runpod", "pub fn proxy_url() {}"),
        ("runpod::matrix", "fn m() { crate::trial::run::go(); }"),
    ]
    .iter()
    .map(|(m, c)| (m.to_string(), c.to_string()))
    .collect();
    let nested: BTreeSet<String> = ["trial", "runpod"].map(String::from).into();
    let (_, edges) = graph(&files, &nested);
    assert_eq!(forbidden(&edges), vec!["trial -> runpod".to_string()]);
    assert!(edges["runpod::matrix"].contains("trial::run"), "{edges:?}");
    // Without the planted line, nothing is forbidden.
    let clean: Vec<(String, String)> = files
        .iter()
        .map(|(m, c)| (m.clone(), c.replace("crate::runpod::proxy_url();", "")))
        .collect();
    assert!(forbidden(&graph(&clean, &nested).1).is_empty());
}
