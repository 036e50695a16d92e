//! What a recording must not carry: absolute local paths (they name users, home directories and
//! machines). A server's configuration and its responses are reduced to file names before they
//! are kept (llama.cpp reports `model_path` and, without `--alias`, names the model by its path
//! in every chunk).

use serde_json::Value;
use std::borrow::Cow;

/// The file name of `s` when [`is_local_path`] says it is an absolute local path; `None` for
/// anything else.
pub fn local_path_file_name(s: &str) -> Option<&str> {
    if !is_local_path(s) {
        return None;
    }
    s.rsplit(['/', '\\']).find(|c| !c.is_empty())
}

/// Top-level directories under which a path says whose machine it came from.
const LOCAL_ROOTS: &[&str] = &[
    "home",
    "root",
    "Users",
    "tmp",
    "var",
    "private",
    "mnt",
    "media",
    "opt",
    "srv",
    "work",
    "workspace",
    "data",
    "scratch",
    "run",
    "nix",
];

/// Whether `s` is an absolute path on a local file system: `~/…`, a drive path, or a path
/// under one of the directories where users' and machines' files live. Shape alone cannot tell
/// `/srv/models/m` from a URL path like `/v1/completions`, hence the list of roots.
pub fn is_local_path(s: &str) -> bool {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return false;
    }
    if s.starts_with("~/") {
        return true;
    }
    let b = s.as_bytes();
    if b.len() > 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b[2] == b'\\' || b[2] == b'/')
    {
        return true;
    }
    let Some(rest) = s.strip_prefix('/') else {
        return false;
    };
    let mut parts = rest.split('/');
    let root = parts.next().unwrap_or_default();
    LOCAL_ROOTS.contains(&root) && parts.next().is_some()
}

/// Replaces every string in `v` that is a local path by its file name.
pub fn scrub_paths(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Some(name) = local_path_file_name(s) {
                *s = name.to_string();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(scrub_paths),
        Value::Object(o) => o.values_mut().for_each(scrub_paths),
        _ => {}
    }
}

/// A response record (an SSE record's data or a JSON body) with its `"model"` reduced to a file
/// name when the server named the model by a local path; every other byte kept as it came.
pub fn scrub_model_field(data: &str) -> Cow<'_, str> {
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return Cow::Borrowed(data);
    };
    let Some(model) = v.get("model").and_then(Value::as_str) else {
        return Cow::Borrowed(data);
    };
    let Some(name) = local_path_file_name(model) else {
        return Cow::Borrowed(data);
    };
    // The path as it is written in JSON (escapes included), replaced where it is the value.
    let (Ok(from), Ok(to)) = (serde_json::to_string(model), serde_json::to_string(name)) else {
        return Cow::Borrowed(data);
    };
    Cow::Owned(data.replace(&from, &to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_file_names() {
        for (path, name) in [
            ("/root/.cache/inferlab/models/tiny.gguf", "tiny.gguf"),
            ("/home/alice/models/llama-3/", "llama-3"),
            ("/Users/bob/m.gguf", "m.gguf"),
            ("~/models/m.gguf", "m.gguf"),
            (r"C:\Users\carol\m.gguf", "m.gguf"),
            ("/tmp/x/y", "y"),
        ] {
            assert_eq!(local_path_file_name(path), Some(name), "{path}");
        }
        for not in [
            "/v1/completions",
            "/metrics",
            "models/m.gguf",
            "tiny-llama",
            "http://127.0.0.1:8080/home/x",
            "/home",
            "the /home/x of it",
            "",
        ] {
            assert_eq!(local_path_file_name(not), None, "{not}");
        }
    }

    #[test]
    fn configuration_and_model_fields_are_scrubbed() {
        let mut v = serde_json::json!({
            "model_path": "/root/.cache/m.gguf",
            "n_ctx": 4096,
            "nested": [{"dir": "/home/alice/x"}, "plain"],
        });
        scrub_paths(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"model_path": "m.gguf", "n_ctx": 4096, "nested": [{"dir": "x"}, "plain"]})
        );
        let data = r#"{"choices":[{"text":"a"}],"created":1,"model":"/root/.cache/m.gguf","x":"/root/.cache/m.gguf"}"#;
        assert_eq!(
            scrub_model_field(data),
            r#"{"choices":[{"text":"a"}],"created":1,"model":"m.gguf","x":"m.gguf"}"#
        );
        let kept = r#"{"model":"tiny-llama","choices":[]}"#;
        assert!(matches!(scrub_model_field(kept), Cow::Borrowed(_)));
        assert_eq!(scrub_model_field("not json"), "not json");
    }
}
