//! RunPod REST API v2: pods (create, get, list, action, delete, logs) and the GPU catalog.
//!
//! Every call carries the bearer key, which never appears in an error. Problem bodies
//! (RFC 9457) become readable errors. A `429` waits `Retry-After` and tries again (the call was
//! not processed, so any call may be retried); `5xx` and transport failures are retried only
//! for idempotent calls (GET, DELETE), with exponential back-off; both within a bound. When a
//! response's `RateLimit` header says nothing remains, the next call waits for the reset.

use crate::client::{Secret, error_chain};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The API's base URL unless `INFERLAB_RUNPOD_API` says otherwise.
pub const DEFAULT_API: &str = "https://api.runpod.io/v2";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An RFC 9457 problem, or any other error status.
    #[error("RunPod API {method} {path}: HTTP {status}: {message}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    #[error("RunPod API {method} {path}: {message}")]
    Transport {
        method: &'static str,
        path: String,
        message: String,
    },
    #[error("RunPod API {method} {path}: still rate-limited (429) after {attempts} attempts")]
    RateLimited {
        method: &'static str,
        path: String,
        attempts: u32,
    },
    #[error("RunPod API {method} {path}: unexpected answer: {message}")]
    Decode {
        method: &'static str,
        path: String,
        message: String,
    },
    #[error("RUNPOD_API_KEY is not set")]
    NoKey,
    #[error("RunPod API client: {0}")]
    Client(#[source] reqwest::Error),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}

/// A pod as the API describes it (fields this tool uses; the rest is kept in `extra`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// Dollars per hour.
    #[serde(default)]
    pub cost: Option<f64>,
    #[serde(default)]
    pub data_center_id: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub gpu: Option<Value>,
    #[serde(default)]
    pub runtime: Option<Value>,
}

/// `POST /v2/pods`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreatePod {
    pub name: String,
    pub image: String,
    pub args: String,
    pub disk: u32,
    pub ports: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
    pub gpu: GpuRequest,
    pub cloud: Cloud,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data_center_ids: Vec<String>,
}

impl CreatePod {
    /// The body with environment values hidden, for logs and manifests.
    pub fn redacted(&self) -> CreatePod {
        let mut c = self.clone();
        for v in c.env.values_mut() {
            *v = "[redacted]".into();
        }
        c
    }
}

/// Where a pod runs: RunPod's secure cloud or its community cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Cloud {
    Secure,
    Community,
}

impl Cloud {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SECURE" => Some(Self::Secure),
            "COMMUNITY" => Some(Self::Community),
            _ => None,
        }
    }

    /// The catalog's hourly price of a GPU in this cloud (community falls back to secure).
    pub fn price(self, p: &Price) -> Option<f64> {
        match self {
            Self::Secure => p.secure,
            Self::Community => p.community.or(p.secure),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuRequest {
    pub id: String,
    pub count: u32,
}

/// One GPU type in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogGpu {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// GB.
    #[serde(default)]
    pub memory: Option<f64>,
    #[serde(default)]
    pub price: Option<Price>,
    #[serde(default)]
    pub max_count: Option<u32>,
    /// NONE, LOW, MEDIUM, HIGH.
    #[serde(default)]
    pub availability: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Price {
    pub secure: Option<f64>,
    pub community: Option<f64>,
}

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts per call, the first included.
    pub attempts: u32,
    /// First back-off; doubles each time.
    pub backoff: Duration,
    /// Longest wait for one `Retry-After` or back-off.
    pub max_wait: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 6,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
        }
    }
}

pub struct RunPod {
    http: reqwest::Client,
    base: String,
    key: Secret,
    retry: Retry,
    /// Set when the last response said no calls remain: wait until then.
    hold_until: Mutex<Option<Instant>>,
}

impl RunPod {
    pub fn new(base: &str, key: Secret, retry: Retry) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(ApiError::Client)?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
            retry,
            hold_until: Mutex::new(None),
        })
    }

    /// From `RUNPOD_API_KEY` and `INFERLAB_RUNPOD_API`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ApiError> {
        let key = env("RUNPOD_API_KEY")
            .filter(|k| !k.trim().is_empty())
            .ok_or(ApiError::NoKey)?;
        let base = env("INFERLAB_RUNPOD_API").unwrap_or_else(|| DEFAULT_API.to_string());
        Self::new(&base, Secret::new(key.trim()), Retry::default())
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn key(&self) -> &Secret {
        &self.key
    }

    pub async fn create_pod(&self, body: &CreatePod) -> Result<Pod, ApiError> {
        let body = serde_json::to_value(body).unwrap_or(Value::Null);
        self.json(reqwest::Method::POST, "/pods", Some(&body)).await
    }

    pub async fn get_pod(&self, id: &str) -> Result<Pod, ApiError> {
        self.json(reqwest::Method::GET, &format!("/pods/{id}"), None)
            .await
    }

    pub async fn list_pods(&self) -> Result<Vec<Pod>, ApiError> {
        #[derive(Deserialize)]
        struct List {
            pods: Vec<Pod>,
        }
        let l: List = self.json(reqwest::Method::GET, "/pods", None).await?;
        Ok(l.pods)
    }

    /// `stop`, `start`, `restart` or `terminate`.
    pub async fn action(&self, id: &str, action: &str) -> Result<(), ApiError> {
        let body = serde_json::json!({ "action": action });
        self.call(
            reqwest::Method::POST,
            &format!("/pods/{id}/action"),
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// Terminates a pod; one that is already gone (404) counts as terminated.
    pub async fn delete_pod(&self, id: &str) -> Result<(), ApiError> {
        match self
            .call(reqwest::Method::DELETE, &format!("/pods/{id}"), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn logs(&self, id: &str) -> Result<String, ApiError> {
        let path = format!("/pods/{id}/logs");
        let resp = self.call(reqwest::Method::GET, &path, None).await?;
        resp.text().await.map_err(|e| ApiError::Decode {
            method: "GET",
            path,
            message: self.key.redact(&e.to_string()),
        })
    }

    pub async fn gpu_catalog(&self, count: u32) -> Result<Vec<CatalogGpu>, ApiError> {
        let path = format!("/catalog/gpus?include=AVAILABILITY&product=POD&count={count}");
        let v: Value = self.json(reqwest::Method::GET, &path, None).await?;
        // Either a bare array or `{"gpus": [...]}`.
        let list = match v {
            Value::Object(mut m) => m.remove("gpus").unwrap_or(Value::Null),
            v => v,
        };
        serde_json::from_value(list).map_err(|e| ApiError::Decode {
            method: "GET",
            path,
            message: e.to_string(),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        let m = method_name(&method);
        let resp = self.call(method, path, body).await?;
        let bytes = resp.bytes().await.map_err(|e| ApiError::Transport {
            method: m,
            path: path.to_string(),
            message: self.key.redact(&e.to_string()),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            method: m,
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// One call with the retry policy; a success status, or the error.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ApiError> {
        let m = method_name(&method);
        let idempotent = matches!(method, reqwest::Method::GET | reqwest::Method::DELETE);
        let url = format!("{}{path}", self.base);
        let mut backoff = self.retry.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let hold = self.hold_until.lock().ok().and_then(|mut h| h.take());
            if let Some(until) = hold {
                tokio::time::sleep_until(until.min(Instant::now() + self.retry.max_wait)).await;
            }
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.key.expose());
            if let Some(b) = body {
                req = req.json(b);
            }
            let last = attempt >= self.retry.attempts;
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    if idempotent && !last {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.retry.max_wait);
                        continue;
                    }
                    return Err(ApiError::Transport {
                        method: m,
                        path: path.to_string(),
                        message: self.key.redact(&error_chain(&e)),
                    });
                }
            };
            self.note_rate_limit(resp.headers());
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status.as_u16() == 429 {
                if last {
                    return Err(ApiError::RateLimited {
                        method: m,
                        path: path.to_string(),
                        attempts: attempt,
                    });
                }
                let wait = retry_after(resp.headers()).unwrap_or(backoff);
                tokio::time::sleep(wait.min(self.retry.max_wait)).await;
                backoff = (backoff * 2).min(self.retry.max_wait);
                continue;
            }
            if status.is_server_error() && idempotent && !last {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.retry.max_wait);
                continue;
            }
            let text = resp.text().await.unwrap_or_default();
            return Err(ApiError::Status {
                method: m,
                path: path.to_string(),
                status: status.as_u16(),
                message: self.key.redact(&problem_message(&text)),
            });
        }
    }

    fn note_rate_limit(&self, headers: &reqwest::header::HeaderMap) {
        let Some(v) = headers.get("ratelimit").and_then(|v| v.to_str().ok()) else {
            return;
        };
        if let Some((0, reset)) = parse_rate_limit(v)
            && let Ok(mut h) = self.hold_until.lock()
        {
            *h = Some(Instant::now() + Duration::from_secs(reset));
        }
    }
}

fn method_name(m: &reqwest::Method) -> &'static str {
    match *m {
        reqwest::Method::GET => "GET",
        reqwest::Method::POST => "POST",
        reqwest::Method::DELETE => "DELETE",
        reqwest::Method::PUT => "PUT",
        _ => "request",
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the API).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?;
    v.trim().parse::<f64>().ok().map(Duration::from_secs_f64)
}

/// `(remaining, reset seconds)` from a `RateLimit` header, in either the structured form
/// (`"default";r=0;t=30`) or the older list form (`limit=60, remaining=0, reset=30`).
pub fn parse_rate_limit(v: &str) -> Option<(u64, u64)> {
    let mut remaining = None;
    let mut reset = None;
    for part in v.split([';', ',']) {
        let Some((k, val)) = part.trim().split_once('=') else {
            continue;
        };
        let val: Option<u64> = val.trim().trim_matches('"').parse().ok();
        match k.trim() {
            "r" | "remaining" => remaining = val,
            "t" | "reset" => reset = val,
            _ => {}
        }
    }
    Some((remaining?, reset.unwrap_or(1)))
}

/// A readable message from an RFC 9457 problem body (`title: detail`, then each of
/// `errors`), or the body itself, shortened.
pub fn problem_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Problem {
        title: Option<String>,
        detail: Option<String>,
        #[serde(default)]
        errors: Vec<Value>,
    }
    if let Ok(p) = serde_json::from_str::<Problem>(body)
        && (p.title.is_some() || p.detail.is_some())
    {
        let mut out = match (p.title, p.detail) {
            (Some(t), Some(d)) => format!("{t}: {d}"),
            (Some(t), None) => t,
            (None, Some(d)) => d,
            (None, None) => String::new(),
        };
        for e in p.errors {
            let text = match &e {
                Value::String(s) => s.clone(),
                Value::Object(o) => {
                    let field = o
                        .get("pointer")
                        .or_else(|| o.get("field"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let detail = o
                        .get("detail")
                        .or_else(|| o.get("message"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    format!("{field} {detail}").trim().to_string()
                }
                other => other.to_string(),
            };
            out.push_str("; ");
            out.push_str(&text);
        }
        return out;
    }
    let body = body.trim();
    if body.is_empty() {
        "(empty body)".to_string()
    } else {
        body.chars().take(300).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_well() {
        let body = r#"{"type":"about:blank","title":"Invalid request","status":400,"detail":"gpu.id is unknown","errors":[{"pointer":"/gpu/id","detail":"no such GPU type"}]}"#;
        assert_eq!(
            problem_message(body),
            "Invalid request: gpu.id is unknown; /gpu/id no such GPU type"
        );
        assert_eq!(problem_message("  "), "(empty body)");
        assert_eq!(problem_message("<html>bad gateway"), "<html>bad gateway");
    }

    #[test]
    fn rate_limit_headers_in_both_forms() {
        assert_eq!(parse_rate_limit(r#""default";r=0;t=30"#), Some((0, 30)));
        assert_eq!(
            parse_rate_limit("limit=60, remaining=12, reset=5"),
            Some((12, 5))
        );
        assert_eq!(parse_rate_limit("garbage"), None);
    }
}
