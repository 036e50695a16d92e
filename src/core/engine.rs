//! Per-engine knowledge: which request fields each server understands, where it reports its
//! version. Holds no connections: callers do the IO with what this module tells them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kind of server behind a target; it decides request quirks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Vllm,
    Sglang,
    Llamacpp,
    /// Any OpenAI-compatible server: only standard fields are sent.
    Openai,
    /// A RunPod serverless endpoint running the vLLM worker
    /// (`https://api.runpod.ai/v2/{endpoint}/openai/v1`): cold starts, re-chunked streams, no
    /// `/metrics`, worker and job counts from its `/health`.
    #[serde(rename = "runpod_serverless")]
    RunpodServerless,
}

impl TargetKind {
    pub const ALL: [Self; 5] = [
        Self::Vllm,
        Self::Sglang,
        Self::Llamacpp,
        Self::Openai,
        Self::RunpodServerless,
    ];

    /// The kind its name (as written in results: `vllm`, `runpod_serverless`) names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.to_string() == name)
    }

    /// The kind implied by a target's name, for the three named engines.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "vllm" => Some(Self::Vllm),
            "sglang" => Some(Self::Sglang),
            "llamacpp" => Some(Self::Llamacpp),
            _ => None,
        }
    }

    /// Whether the server accepts `ignore_eos` (run to `max_tokens` regardless of EOS).
    pub fn supports_ignore_eos(self) -> bool {
        !matches!(self, Self::Openai)
    }

    /// Whether the server puts cumulative usage on every chunk when asked
    /// (`stream_options.continuous_usage_stats`), which gives exact tokens per chunk.
    pub fn supports_continuous_usage(self) -> bool {
        matches!(self, Self::Vllm | Self::Sglang)
    }

    /// Whether each stream event carries exactly one token, so that a final usage equal to the
    /// event count means one token per event. SGLang groups tokens into chunks (32 tokens came
    /// as 31 chunks) and RunPod's worker re-chunks, so a match there would be chance.
    pub fn streams_one_token_per_event(self) -> bool {
        matches!(self, Self::Vllm | Self::Llamacpp | Self::Openai)
    }

    /// Whether the target scales to zero, so the first request after idle is a cold start.
    pub fn is_serverless(self) -> bool {
        matches!(self, Self::RunpodServerless)
    }

    /// Whether the target may have a Prometheus `/metrics` to scrape (a serverless endpoint has
    /// none, and a request to it could wake a worker).
    pub fn serves_metrics(self) -> bool {
        !self.is_serverless()
    }

    /// Where the server reports its version, and the JSON pointer to read there.
    pub fn version_endpoint(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Vllm => Some(("/version", "/version")),
            Self::Sglang => Some(("/get_server_info", "/version")),
            Self::Llamacpp => Some(("/props", "/build_info")),
            Self::Openai | Self::RunpodServerless => None,
        }
    }

    /// Configuration worth keeping from the version document (name, JSON pointer).
    pub fn config_pointers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Llamacpp => &[
                ("total_slots", "/total_slots"),
                ("n_ctx", "/default_generation_settings/n_ctx"),
                ("model_path", "/model_path"),
                ("build_info", "/build_info"),
            ],
            Self::Sglang => &[
                ("context_length", "/context_length"),
                ("page_size", "/page_size"),
                ("max_total_num_tokens", "/max_total_num_tokens"),
                ("max_running_requests", "/max_running_requests"),
                ("chunked_prefill_size", "/chunked_prefill_size"),
                ("mem_fraction_static", "/mem_fraction_static"),
                ("schedule_policy", "/schedule_policy"),
                ("disable_radix_cache", "/disable_radix_cache"),
                ("enable_cache_report", "/enable_cache_report"),
                ("tp_size", "/tp_size"),
                ("dp_size", "/dp_size"),
            ],
            Self::Vllm | Self::Openai | Self::RunpodServerless => &[],
        }
    }

    /// The engine's name as written in fixtures and manifests.
    pub fn engine_name(self) -> &'static str {
        match self {
            Self::Vllm => "vLLM",
            Self::Sglang => "SGLang",
            Self::Llamacpp => "llama.cpp",
            Self::Openai => "openai-compatible",
            Self::RunpodServerless => "RunPod serverless (vLLM worker)",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Vllm => "vllm",
            Self::Sglang => "sglang",
            Self::Llamacpp => "llamacpp",
            Self::Openai => "openai",
            Self::RunpodServerless => "runpod_serverless",
        })
    }
}
