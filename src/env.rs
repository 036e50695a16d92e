//! The only reader of the process environment. Everything else takes an `env` function
//! (`&dyn Fn(&str) -> Option<String>`), so tests pass a closure instead of setting variables;
//! a target's own variables are named by [`target_var`].

/// Reads a variable of the process environment (`None` when unset or not Unicode).
pub fn process(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `INFERLAB_<TARGET>_<SUFFIX>`, the target name upper-cased with `-` as `_`.
pub fn target_var(target: &str, suffix: &str) -> String {
    format!(
        "INFERLAB_{}_{suffix}",
        target.to_uppercase().replace('-', "_")
    )
}

/// `INFERLAB_CLIENT_WORKERS`, when set to a positive number.
pub fn client_workers() -> Option<usize> {
    process("INFERLAB_CLIENT_WORKERS")
        .and_then(|v| v.parse().ok())
        .filter(|&w| w > 0)
}

/// An environment variable whose value cannot be used, named with what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// Variables of which one at most may be set.
    #[error("{} are set: set one", .0.join(" and "))]
    Conflict(Vec<String>),
    #[error("{var} must be {expected}")]
    Malformed { var: String, expected: String },
    /// A value that did not parse, with the parser's words.
    #[error("{var}: {problem}")]
    Invalid { var: String, problem: String },
}

/// Where a target's server is, as its variables say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSource {
    /// `INFERLAB_<T>_URL`, as written.
    Url(String),
    /// `INFERLAB_<T>_RUNPOD_POD` (and `_RUNPOD_PORT`, default 8000): a pod behind RunPod's proxy.
    Pod { id: String, port: String },
    /// `INFERLAB_<T>_RUNPOD_ENDPOINT`: a RunPod serverless endpoint.
    Serverless { id: String },
    /// None of them: the target is not live.
    None,
}

impl TargetSource {
    /// Reads target `name`'s variables through `env`; setting two of them, or a malformed pod
    /// id, port or endpoint id, is an error naming the variables.
    pub fn read(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let var = |s: &str| target_var(name, s);
        let get = |s: &str| {
            env(&var(s))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let set: Vec<String> = ["URL", "RUNPOD_POD", "RUNPOD_ENDPOINT"]
            .into_iter()
            .filter(|s| get(s).is_some())
            .map(var)
            .collect();
        if set.len() > 1 {
            return Err(EnvError::Conflict(set));
        }
        if let Some(id) = get("RUNPOD_ENDPOINT") {
            if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(EnvError::Malformed {
                    var: var("RUNPOD_ENDPOINT"),
                    expected: "a RunPod endpoint id".into(),
                });
            }
            return Ok(Self::Serverless { id });
        }
        if let Some(id) = get("RUNPOD_POD") {
            let port = get("RUNPOD_PORT").unwrap_or_else(|| "8000".to_string());
            if !id.chars().all(|c| c.is_ascii_alphanumeric()) || port.parse::<u16>().is_err() {
                return Err(EnvError::Malformed {
                    var: var("RUNPOD_POD"),
                    expected: format!("a pod id and {} a port number", var("RUNPOD_PORT")),
                });
            }
            return Ok(Self::Pod { id, port });
        }
        Ok(get("URL").map_or(Self::None, Self::Url))
    }
}

/// `INFERLAB_RECORD` is `1` or `true`: live trials write their fixtures.
pub fn record(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env("INFERLAB_RECORD").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Whether this runs on CI (`CI` set, as CI services set it, and not `false` or `0`).
pub fn ci(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env("CI").is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// `INFERLAB_REPLAY_SLOWDOWN`: the factor replayed streams are stretched by (1 when unset); a
/// value that is not a positive finite number is an error naming the variable.
pub fn replay_slowdown(env: &dyn Fn(&str) -> Option<String>) -> Result<f64, EnvError> {
    let Some(raw) = env("INFERLAB_REPLAY_SLOWDOWN").filter(|v| !v.trim().is_empty()) else {
        return Ok(1.0);
    };
    match raw.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(EnvError::Malformed {
            var: "INFERLAB_REPLAY_SLOWDOWN".into(),
            expected: format!("a positive number (e.g. 1.10 for 10 % slower), not `{raw}`"),
        }),
    }
}

/// A pod's HTTP proxy URL: `https://{pod}-{port}.proxy.runpod.net`, or the template in
/// `INFERLAB_RUNPOD_PROXY` (with `{pod}` and `{port}`), which tests point at a local stand-in.
pub fn runpod_proxy_url(env: &dyn Fn(&str) -> Option<String>, pod: &str, port: &str) -> String {
    let template = env("INFERLAB_RUNPOD_PROXY")
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| "https://{pod}-{port}.proxy.runpod.net".to_string());
    template
        .trim()
        .trim_end_matches('/')
        .replace("{pod}", pod)
        .replace("{port}", port)
}

/// A serverless endpoint's base (`https://api.runpod.ai/v2/{endpoint}`, or the template in
/// `INFERLAB_RUNPOD_SERVERLESS`): the OpenAI routes live under `/openai`, the worker and job
/// counts at `/health`.
pub fn runpod_serverless_url(env: &dyn Fn(&str) -> Option<String>, endpoint: &str) -> String {
    let template = env("INFERLAB_RUNPOD_SERVERLESS")
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| "https://api.runpod.ai/v2/{endpoint}".to_string());
    template
        .trim()
        .trim_end_matches('/')
        .replace("{endpoint}", endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_variables_are_upper_case_with_underscores() {
        assert_eq!(target_var("vllm", "URL"), "INFERLAB_VLLM_URL");
        assert_eq!(
            target_var("my-sglang", "RUNPOD_POD"),
            "INFERLAB_MY_SGLANG_RUNPOD_POD"
        );
    }

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_target_is_a_url_a_pod_a_serverless_endpoint_or_nothing() {
        let read = |pairs| TargetSource::read("vllm", &vars(pairs));
        assert_eq!(read(&[]), Ok(TargetSource::None));
        assert_eq!(read(&[("INFERLAB_VLLM_URL", "  ")]), Ok(TargetSource::None));
        assert_eq!(
            read(&[("INFERLAB_VLLM_URL", " http://h:1 ")]),
            Ok(TargetSource::Url("http://h:1".into()))
        );
        assert_eq!(
            read(&[("INFERLAB_VLLM_RUNPOD_POD", "abc123")]),
            Ok(TargetSource::Pod {
                id: "abc123".into(),
                port: "8000".into()
            })
        );
        assert_eq!(
            read(&[("INFERLAB_VLLM_RUNPOD_ENDPOINT", "ep-1")]),
            Ok(TargetSource::Serverless { id: "ep-1".into() })
        );
    }

    #[test]
    fn conflicting_or_malformed_variables_are_named() {
        let read = |pairs| {
            TargetSource::read("vllm", &vars(pairs))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            read(&[
                ("INFERLAB_VLLM_URL", "http://h"),
                ("INFERLAB_VLLM_RUNPOD_POD", "p")
            ]),
            "INFERLAB_VLLM_URL and INFERLAB_VLLM_RUNPOD_POD are set: set one"
        );
        assert!(read(&[("INFERLAB_VLLM_RUNPOD_POD", "p/1")]).contains("must be a pod id"));
        assert!(
            read(&[
                ("INFERLAB_VLLM_RUNPOD_POD", "p"),
                ("INFERLAB_VLLM_RUNPOD_PORT", "x")
            ])
            .contains("INFERLAB_VLLM_RUNPOD_PORT a port number")
        );
        assert!(read(&[("INFERLAB_VLLM_RUNPOD_ENDPOINT", "e/1")]).contains("RunPod endpoint id"));
    }

    #[test]
    fn recording_is_on_for_1_or_true() {
        assert!(record(&vars(&[("INFERLAB_RECORD", "1")])));
        assert!(record(&vars(&[("INFERLAB_RECORD", "TRUE")])));
        assert!(!record(&vars(&[("INFERLAB_RECORD", "0")])));
        assert!(!record(&vars(&[])));
    }
}
