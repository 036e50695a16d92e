//! Side requests to a live target, all best effort with the target's key and a short timeout:
//! the server's version and configuration, the context a request gets, the server's own token
//! count of a text, a JSON document at a URL. A server that says nothing gets `None`, never an
//! error: these describe a run, they do not decide whether it runs.

use crate::client::Endpoint;
use crate::core::engine::TargetKind;
use serde_json::Value;
use std::time::Duration;

/// The successful response to a side request, or `None`.
async fn side_request(ep: &Endpoint, req: reqwest::RequestBuilder) -> Option<reqwest::Response> {
    let mut req = req.timeout(Duration::from_secs(5));
    if let Some(k) = &ep.api_key {
        req = req.bearer_auth(k.expose());
    }
    let resp = req.send().await.ok()?;
    resp.status().is_success().then_some(resp)
}

/// GET an absolute URL as JSON.
pub async fn get_json_url(http: &reqwest::Client, ep: &Endpoint, url: &str) -> Option<Value> {
    side_request(ep, http.get(url)).await?.json().await.ok()
}

/// GET `path` under the endpoint's base as JSON.
pub async fn get_json(http: &reqwest::Client, ep: &Endpoint, path: &str) -> Option<Value> {
    get_json_url(http, ep, &format!("{}{path}", ep.base_url)).await
}

/// What a server says about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerInfo {
    pub version: Option<String>,
    /// Cache and parallelism settings, named as the engine names them.
    pub config: Option<Value>,
}

/// The server's version and configuration, as far as it exposes them.
pub async fn server_info(http: &reqwest::Client, ep: &Endpoint) -> ServerInfo {
    let Some((path, pointer)) = ep.kind.version_endpoint() else {
        return ServerInfo::default();
    };
    let doc = get_json(http, ep, path).await;
    let version = doc
        .as_ref()
        .and_then(|v| v.pointer(pointer))
        .and_then(Value::as_str)
        .map(str::to_string);
    let config = match ep.kind {
        TargetKind::Vllm => vllm_cache_config(http, ep).await,
        kind => doc.map(|d| config_of(kind, &d)),
    };
    ServerInfo { version, config }
}

/// The fields of a server-info document that describe the engine's configuration.
/// A local path (llama.cpp's `model_path`) is kept as its file name: results and fixtures are
/// shared, and a path names a user and a machine.
fn config_of(kind: TargetKind, doc: &Value) -> Value {
    let mut config = Value::Object(
        kind.config_pointers()
            .iter()
            .filter_map(|(name, ptr)| Some((name.to_string(), doc.pointer(ptr)?.clone())))
            .collect(),
    );
    crate::core::privacy::scrub_paths(&mut config);
    config
}

/// vLLM carries its cache configuration in the labels of `vllm:cache_config_info`.
async fn vllm_cache_config(http: &reqwest::Client, ep: &Endpoint) -> Option<Value> {
    let text = side_request(ep, http.get(format!("{}/metrics", ep.base_url)))
        .await?
        .text()
        .await
        .ok()?;
    cache_config_labels(&text)
}

fn cache_config_labels(metrics_text: &str) -> Option<Value> {
    let e = crate::core::prom::parse_filtered(metrics_text, &|n| n == "vllm:cache_config_info");
    let s = e.samples.first()?;
    Some(Value::Object(
        s.labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    ))
}

/// The context window a single request gets, and where the figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub tokens: u64,
    pub source: &'static str,
}

/// The context a request gets, when the server says: llama.cpp's per-slot `n_ctx` (from the
/// configuration already read), vLLM's and SGLang's `max_model_len` from `/v1/models`.
pub async fn context(
    http: &reqwest::Client,
    ep: &Endpoint,
    config: Option<&Value>,
) -> Option<Context> {
    match ep.kind {
        TargetKind::Llamacpp => Some(Context {
            tokens: config?.get("n_ctx")?.as_u64()?,
            source: "llama.cpp n_ctx per slot",
        }),
        TargetKind::Vllm | TargetKind::Sglang | TargetKind::Openai => {
            let models = get_json(http, ep, "/v1/models").await?;
            Some(Context {
                tokens: models.pointer("/data/0/max_model_len")?.as_u64()?,
                source: "max_model_len from /v1/models",
            })
        }
        // Any request would wake a worker and spoil the cold start the first warmup measures.
        TargetKind::RunpodServerless => None,
    }
}

/// The `/tokenize` request body for `text` without special tokens, where the engine has one.
fn tokenize_body(ep: &Endpoint, text: &str) -> Option<Value> {
    match ep.kind {
        TargetKind::Llamacpp => Some(serde_json::json!({ "content": text, "add_special": false })),
        // SGLang 0.5.21's /tokenize takes vLLM's request (and answers with `count` too).
        TargetKind::Vllm | TargetKind::Sglang => Some(
            serde_json::json!({ "model": ep.model, "prompt": text, "add_special_tokens": false }),
        ),
        TargetKind::Openai | TargetKind::RunpodServerless => None,
    }
}

/// Token count of `text` by the server's own tokenizer, without special tokens.
pub async fn tokenize(http: &reqwest::Client, ep: &Endpoint, text: &str) -> Option<u64> {
    let body = tokenize_body(ep, text)?;
    let resp = side_request(
        ep,
        http.post(format!("{}/tokenize", ep.base_url)).json(&body),
    )
    .await?;
    token_count(&resp.json().await.ok()?)
}

/// llama.cpp answers `{"tokens": [...]}`, vLLM adds `"count"`.
fn token_count(v: &Value) -> Option<u64> {
    v.get("count")
        .and_then(Value::as_u64)
        .or_else(|| Some(v.get("tokens")?.as_array()?.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vllm_cache_config_comes_from_the_info_series_labels() {
        let text = "# TYPE vllm:cache_config_info gauge\n\
            vllm:cache_config_info{block_size=\"128\",enable_prefix_caching=\"True\"} 1.0\n\
            vllm:num_requests_running 0.0\n";
        assert_eq!(
            cache_config_labels(text),
            Some(json!({"block_size": "128", "enable_prefix_caching": "True"}))
        );
        assert_eq!(cache_config_labels("vllm:num_requests_running 0\n"), None);
    }

    #[test]
    fn a_recorded_vllm_exposition_says_its_block_size() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("wiremock-fixtures/metrics/vllm-0.32.0.prom");
        let config = cache_config_labels(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(config["block_size"], "128", "vLLM's CPU KV block");
        assert_eq!(config["enable_prefix_caching"], "True");
    }

    #[test]
    fn a_config_keeps_only_the_fields_the_engine_names() {
        let doc = json!({
            "total_slots": 4,
            "default_generation_settings": {"n_ctx": 512, "temperature": 0.8},
            "unrelated": 1
        });
        assert_eq!(
            config_of(TargetKind::Llamacpp, &doc),
            json!({"total_slots": 4, "n_ctx": 512})
        );
    }

    #[test]
    fn token_counts_read_count_or_the_token_list() {
        assert_eq!(token_count(&json!({"count": 7, "tokens": [1, 2]})), Some(7));
        assert_eq!(token_count(&json!({"tokens": [1, 2, 3]})), Some(3));
        assert_eq!(token_count(&json!({"error": "no"})), None);
    }
}
