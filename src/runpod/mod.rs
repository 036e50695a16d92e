//! RunPod: the REST v2 client (`api`), deployment files and the model-to-GPU fit (`deploy`),
//! and the pod lifecycle with guaranteed teardown and a ledger of the pods this tool created
//! (`lifecycle`).

pub mod api;
pub mod deploy;
pub mod lifecycle;
pub mod matrix;

/// A pod's HTTP proxy URL: `https://{pod}-{port}.proxy.runpod.net`, or the template in
/// `INFERLAB_RUNPOD_PROXY` (with `{pod}` and `{port}`), which tests point at a local stand-in.
pub fn proxy_url(env: &dyn Fn(&str) -> Option<String>, pod: &str, port: &str) -> String {
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
pub fn serverless_url(env: &dyn Fn(&str) -> Option<String>, endpoint: &str) -> String {
    let template = env("INFERLAB_RUNPOD_SERVERLESS")
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| "https://api.runpod.ai/v2/{endpoint}".to_string());
    template
        .trim()
        .trim_end_matches('/')
        .replace("{endpoint}", endpoint)
}
