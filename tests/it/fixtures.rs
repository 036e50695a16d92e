//! The committed fixtures are fit to share: each says where it came from, and none carries an
//! absolute local path (a user's home, a machine's directories) anywhere — meta, request and
//! response bodies, the SSE records inside them, recorded `/metrics` text.

use crate::common::files_under;
use inferlab::core::privacy::is_local_path;
use serde_json::Value;
use std::path::Path;

/// Every string in `v`, and in the JSON records and text carried inside its strings, split
/// at the characters that end a path in JSON, Prometheus text and CSV.
fn words(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            if let Ok(inner @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str(s) {
                words(&inner, out);
            }
            out.extend(
                s.split(|c: char| c.is_whitespace() || "\"',={}()<>".contains(c))
                    .map(str::to_string),
            );
        }
        Value::Array(a) => a.iter().for_each(|x| words(x, out)),
        Value::Object(o) => o.values().for_each(|x| words(x, out)),
        _ => {}
    }
}

#[test]
fn no_fixture_holds_a_local_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("wiremock-fixtures");
    let home = std::env::var("HOME").ok().filter(|h| h.len() > 1);
    let all = files_under(&root);
    assert!(all.len() > 20, "{} fixture files", all.len());
    let mut found = Vec::new();
    for path in &all {
        let text = std::fs::read_to_string(path).unwrap();
        let values: Vec<Value> = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => vec![serde_json::from_str(&text).unwrap()],
            Some("jsonl") => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            _ => vec![Value::String(text.clone())],
        };
        let mut w = Vec::new();
        values.iter().for_each(|v| words(v, &mut w));
        let name = path.strip_prefix(&root).unwrap().display().to_string();
        for word in w.into_iter().filter(|w| is_local_path(w)) {
            found.push(format!("{name}: {word}"));
        }
        if let Some(h) = &home
            && text.contains(&format!("{h}/"))
        {
            found.push(format!("{name}: the home directory {h}"));
        }
    }
    found.dedup();
    assert!(
        found.is_empty(),
        "local paths in fixtures:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_fixture_says_where_it_came_from() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("wiremock-fixtures");
    let all = files_under(&root);
    let metas: Vec<_> = all.iter().filter(|p| p.ends_with("meta.json")).collect();
    assert!(metas.len() >= 10);
    for p in metas {
        let m: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        let ctx = p.display();
        match m["source"].as_str() {
            Some("recorded") => {
                assert!(m["engine_version"].is_string(), "{ctx}: no engine version");
                assert!(m["model_details"].is_object(), "{ctx}: no model details");
            }
            Some("synthetic") => assert!(m["notes"].is_string(), "{ctx}: says nothing of how"),
            other => panic!("{ctx}: source {other:?}"),
        }
    }
    let readme = std::fs::read_to_string(root.join("metrics/README.md")).unwrap();
    for p in all
        .iter()
        .filter(|p| p.parent().unwrap().ends_with("metrics"))
    {
        let name = p.file_name().unwrap().to_str().unwrap();
        if name != "README.md" {
            assert!(
                readme.contains(&format!("`{name}`")),
                "metrics/{name} not in README"
            );
        }
    }
}
