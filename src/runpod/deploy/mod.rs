//! Deployment files (`deployments/*.toml`): which engine, image, model and GPU a pod runs, and
//! the model-to-GPU fit that refuses a deployment that cannot work before money is spent.
//!
//! ```toml
//! engine = "vllm"                          # or "sglang"
//! image = "vllm/vllm-openai:v0.11.0"
//! serves = "vllm"                          # the experiment target it stands for (default: engine)
//! [model]
//! name = "meta-llama/Llama-3.1-8B-Instruct"
//! dtype = "bf16"                           # bf16, fp16, fp8, int8, int4
//! context = 8192                           # max model length; the KV cache plan uses it
//! concurrency = 32                         # sequences at full context the KV cache must hold
//! [gpu]
//! id = "NVIDIA H100 80GB HBM3"
//! count = 1
//! [pod]
//! disk_gb = 80
//! port = 8000
//! cloud = "SECURE"
//! env = { HF_TOKEN = "$HF_TOKEN" }         # "$NAME": read from the environment when the pod is made
//! ```

mod fit;

pub use fit::{Fit, GPUS, GpuOption, MODELS, OVERHEAD, explain, gpu_memory_gb, known_shape};

use crate::core::diag::{Locator, SpecError, parse_duration, parse_toml};
use crate::runpod::api::{Cloud, CreatePod, GpuRequest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Vllm,
    Sglang,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Bf16,
    Fp16,
    Fp8,
    Int8,
    Int4,
}

impl Dtype {
    /// Bytes per weight (4-bit formats carry scales: ~0.55).
    pub fn bytes(self) -> f64 {
        match self {
            Dtype::Bf16 | Dtype::Fp16 => 2.0,
            Dtype::Fp8 | Dtype::Int8 => 1.0,
            Dtype::Int4 => 0.55,
        }
    }
}

/// The dimensions that decide memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// Parameters, in billions.
    pub params_b: f64,
    pub layers: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
}

/// A validated deployment.
#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    /// The file stem.
    pub name: String,
    pub engine: Engine,
    pub image: String,
    pub serves: String,
    pub model: String,
    pub dtype: Dtype,
    pub shape: Shape,
    pub context: u32,
    pub concurrency: u32,
    pub gpu_id: String,
    pub gpu_count: u32,
    pub gpu_memory_utilization: f64,
    pub disk_gb: u32,
    pub port: u16,
    pub cloud: Cloud,
    pub data_centers: Vec<String>,
    /// Values as written: `$NAME` is read from the environment when the pod is created.
    pub env: BTreeMap<String, String>,
    /// Extra engine arguments, after the ones this tool sets.
    pub args: Vec<String>,
    #[serde(serialize_with = "ser_secs")]
    pub provision_timeout: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub ready_timeout: Duration,
    /// In a matrix: pods alive at once.
    pub parallel: usize,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    engine: Option<Spanned<String>>,
    image: Option<String>,
    serves: Option<String>,
    model: RawModel,
    #[serde(default)]
    gpu: RawGpu,
    #[serde(default)]
    pod: RawPod,
    #[serde(default)]
    timeouts: RawTimeouts,
    matrix: Option<RawMatrix>,
}

/// Engines × models × GPUs: one pod per combination.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatrix {
    #[serde(default)]
    engine: Vec<Spanned<String>>,
    #[serde(default)]
    model: Vec<Spanned<String>>,
    #[serde(default)]
    gpu: Vec<Spanned<String>>,
    /// Image per engine.
    #[serde(default)]
    image: BTreeMap<String, String>,
    /// Pods alive at once.
    parallel: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: Option<Spanned<String>>,
    #[serde(default = "default_dtype")]
    dtype: Dtype,
    context: Spanned<u32>,
    #[serde(default = "default_concurrency")]
    concurrency: u32,
    shape: Option<Shape>,
}

fn default_dtype() -> Dtype {
    Dtype::Bf16
}

fn default_concurrency() -> u32 {
    1
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGpu {
    id: Option<Spanned<String>>,
    #[serde(default = "one")]
    count: u32,
    memory_utilization: Option<Spanned<f64>>,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPod {
    disk_gb: Option<u32>,
    port: Option<u16>,
    cloud: Option<Spanned<String>>,
    #[serde(default)]
    data_centers: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    provision: Option<Spanned<String>>,
    ready: Option<Spanned<String>>,
}

pub fn load(path: &Path) -> Result<Deployment, SpecError> {
    let (src, name) = read(path)?;
    parse(&path.display().to_string(), &name, &src)
}

/// Every deployment in the file (each cell of a matrix).
pub fn load_all(path: &Path) -> Result<Vec<Deployment>, SpecError> {
    let (src, name) = read(path)?;
    parse_all(&path.display().to_string(), &name, &src)
}

fn read(path: &Path) -> Result<(String, String), SpecError> {
    let src = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        file: path.display().to_string(),
        source,
    })?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("deployment")
        .to_string();
    Ok((src, name))
}

/// A single deployment; a file with a `[matrix]` of more than one cell is refused here.
pub fn parse(file: &str, name: &str, src: &str) -> Result<Deployment, SpecError> {
    let mut cells = parse_all(file, name, src)?;
    if cells.len() != 1 {
        return Err(Locator { file, src }.error(
            None,
            "matrix",
            format!(
                "this file is a matrix of {} deployments: use `inferlab run --deploy` or `plan`",
                cells.len()
            ),
        ));
    }
    Ok(cells.remove(0))
}

/// Every deployment the file describes: one, or each cell of its `[matrix]` (engines × models
/// × GPUs), each validated with errors pointing into the file.
pub fn parse_all(file: &str, name: &str, src: &str) -> Result<Vec<Deployment>, SpecError> {
    let loc = Locator { file, src };
    let raw: RawDeployment = parse_toml(&loc)?;
    let m = raw.matrix.as_ref();
    let axis = |from_matrix: Option<&Vec<Spanned<String>>>,
                base: &Option<Spanned<String>>,
                field: &str|
     -> Result<Vec<Spanned<String>>, SpecError> {
        match (from_matrix, base) {
            (Some(v), _) if !v.is_empty() => Ok(v.clone()),
            (_, Some(b)) => Ok(vec![b.clone()]),
            _ => Err(loc.error(None, field, "missing: set it here or list it in [matrix]")),
        }
    };
    let engines = axis(m.map(|m| &m.engine), &raw.engine, "engine")?;
    let models = axis(m.map(|m| &m.model), &raw.model.name, "model.name")?;
    let gpus = axis(m.map(|m| &m.gpu), &raw.gpu.id, "gpu.id")?;
    let matrix = engines.len() * models.len() * gpus.len() > 1;
    let listed = |v: Option<&Vec<Spanned<String>>>| v.is_some_and(|v| !v.is_empty());
    let fields = (
        if listed(m.map(|m| &m.model)) {
            "matrix.model"
        } else {
            "model.name"
        },
        if listed(m.map(|m| &m.gpu)) {
            "matrix.gpu"
        } else {
            "gpu.id"
        },
    );
    let mut out = Vec::new();
    for e in &engines {
        let engine = match e.get_ref().as_str() {
            "vllm" => Engine::Vllm,
            "sglang" => Engine::Sglang,
            other => {
                return Err(loc.error(
                    Some(e.span()),
                    if raw.engine.is_some() && !matrix {
                        "engine"
                    } else {
                        "matrix.engine"
                    },
                    format!("unknown engine `{other}`, expected `vllm` or `sglang`"),
                ));
            }
        };
        for model in &models {
            for gpu in &gpus {
                let cell_name = if matrix {
                    format!(
                        "{name}-{}-{}-{}",
                        engine.as_str(),
                        slug(model.get_ref().rsplit('/').next().unwrap_or("")),
                        slug(gpu.get_ref().trim_start_matches("NVIDIA "))
                    )
                } else {
                    name.to_string()
                };
                out.push(cell(&loc, &raw, engine, model, gpu, cell_name, fields)?);
            }
        }
    }
    Ok(out)
}

/// Lower-case letters, digits and dashes.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

fn cell(
    loc: &Locator<'_>,
    raw: &RawDeployment,
    engine: Engine,
    model: &Spanned<String>,
    gpu: &Spanned<String>,
    name: String,
    (model_field, gpu_field): (&str, &str),
) -> Result<Deployment, SpecError> {
    let model_name = model.get_ref().clone();
    let Some(shape) = raw.model.shape.or_else(|| known_shape(&model_name)) else {
        return Err(loc.error(
            Some(model.span()),
            model_field,
            format!("`{model_name}` is not in the model table: give model.shape = {{ params_b, layers, kv_heads, head_dim }}"),
        ));
    };
    if *raw.model.context.get_ref() == 0 {
        return Err(loc.error(
            Some(raw.model.context.span()),
            "model.context",
            "must be at least 1",
        ));
    }
    if gpu_memory_gb(gpu.get_ref()).is_none() {
        let known: Vec<&str> = GPUS.iter().map(|(g, _)| *g).collect();
        return Err(loc.error(
            Some(gpu.span()),
            gpu_field,
            format!(
                "unknown GPU id `{}`; known: {}",
                gpu.get_ref(),
                known.join(", ")
            ),
        ));
    }
    let util = memory_utilization(loc, raw)?;
    let cloud = lower_cloud(loc, raw)?;
    let duration = |v: &Option<Spanned<String>>, field: &str, default: u64| match v {
        None => Ok(Duration::from_secs(default)),
        Some(s) => parse_duration(s.get_ref()).map_err(|m| loc.error(Some(s.span()), field, m)),
    };
    let env = pod_env(loc, raw)?;
    let image = image_for(raw, engine);
    Ok(Deployment {
        name,
        engine,
        image,
        serves: raw
            .serves
            .clone()
            .unwrap_or_else(|| engine.as_str().to_string()),
        model: model_name,
        dtype: raw.model.dtype,
        shape,
        context: *raw.model.context.get_ref(),
        concurrency: raw.model.concurrency.max(1),
        gpu_id: gpu.get_ref().clone(),
        gpu_count: raw.gpu.count.max(1),
        gpu_memory_utilization: util,
        disk_gb: raw.pod.disk_gb.unwrap_or(80),
        port: raw.pod.port.unwrap_or(8000),
        cloud,
        data_centers: raw.pod.data_centers.clone(),
        env,
        args: raw.pod.args.clone(),
        provision_timeout: duration(&raw.timeouts.provision, "timeouts.provision", 600)?,
        ready_timeout: duration(&raw.timeouts.ready, "timeouts.ready", 1800)?,
        parallel: raw
            .matrix
            .as_ref()
            .and_then(|m| m.parallel)
            .unwrap_or(2)
            .max(1),
    })
}

fn memory_utilization(loc: &Locator<'_>, raw: &RawDeployment) -> Result<f64, SpecError> {
    match &raw.gpu.memory_utilization {
        Some(u) if !(0.1..=1.0).contains(u.get_ref()) => Err(loc.error(
            Some(u.span()),
            "gpu.memory_utilization",
            "must lie between 0.1 and 1",
        )),
        Some(u) => Ok(*u.get_ref()),
        None => Ok(0.9),
    }
}

fn lower_cloud(loc: &Locator<'_>, raw: &RawDeployment) -> Result<Cloud, SpecError> {
    match &raw.pod.cloud {
        Some(c) => Cloud::parse(c.get_ref()).ok_or_else(|| {
            loc.error(
                Some(c.span()),
                "pod.cloud",
                "must be \"SECURE\" or \"COMMUNITY\"",
            )
        }),
        None => Ok(Cloud::Secure),
    }
}

/// The pod's environment. A secret written into the file would be stored with it: only
/// references (`"$NAME"`) are allowed for names that look like credentials.
fn pod_env(loc: &Locator<'_>, raw: &RawDeployment) -> Result<BTreeMap<String, String>, SpecError> {
    let mut env = BTreeMap::new();
    for (k, v) in &raw.pod.env {
        let literal = v.get_ref();
        let lk = k.to_ascii_lowercase();
        if (lk.contains("token") || lk.contains("key") || lk.contains("secret"))
            && !literal.starts_with('$')
        {
            return Err(loc.error(
                Some(v.span()),
                format!("pod.env.{k}"),
                "credentials are read from the environment: write \"$NAME\", not the value",
            ));
        }
        env.insert(k.clone(), literal.clone());
    }
    Ok(env)
}

/// The matrix's image for the engine, else the file's, else the engine's official one.
fn image_for(raw: &RawDeployment, engine: Engine) -> String {
    let per_engine = raw
        .matrix
        .as_ref()
        .and_then(|m| m.image.get(engine.as_str()).cloned());
    per_engine
        .or_else(|| raw.image.clone())
        .unwrap_or_else(|| match engine {
            Engine::Vllm => "vllm/vllm-openai:latest".into(),
            Engine::Sglang => "lmsysorg/sglang:latest".into(),
        })
}

impl Deployment {
    /// The engine's command line: the metrics and cache-report flags on, the model, the port,
    /// the context, the memory share and tensor parallelism, then the file's own arguments.
    pub fn engine_args(&self) -> Vec<String> {
        let s = |x: &str| x.to_string();
        let mut a = match self.engine {
            Engine::Vllm => vec![
                s("--model"),
                self.model.clone(),
                s("--host"),
                s("0.0.0.0"),
                s("--port"),
                self.port.to_string(),
                s("--max-model-len"),
                self.context.to_string(),
                s("--gpu-memory-utilization"),
                self.gpu_memory_utilization.to_string(),
                s("--tensor-parallel-size"),
                self.gpu_count.to_string(),
                s("--enable-prompt-tokens-details"),
            ],
            Engine::Sglang => vec![
                s("python3"),
                s("-m"),
                s("sglang.launch_server"),
                s("--model-path"),
                self.model.clone(),
                s("--host"),
                s("0.0.0.0"),
                s("--port"),
                self.port.to_string(),
                s("--context-length"),
                self.context.to_string(),
                s("--mem-fraction-static"),
                self.gpu_memory_utilization.to_string(),
                s("--tp"),
                self.gpu_count.to_string(),
                s("--enable-metrics"),
                s("--enable-cache-report"),
            ],
        };
        a.extend(self.args.iter().cloned());
        a
    }

    /// The create body; `$NAME` environment values are read now, through `env`.
    pub fn create_request(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<CreatePod, UnsetVar> {
        let mut vars = BTreeMap::new();
        for (k, v) in &self.env {
            let value = match v.strip_prefix('$') {
                Some(name) => env(name).ok_or_else(|| UnsetVar {
                    key: k.clone(),
                    name: name.to_string(),
                })?,
                None => v.clone(),
            };
            vars.insert(k.clone(), value);
        }
        Ok(CreatePod {
            name: format!("inferlab-{}", self.name),
            image: self.image.clone(),
            args: self.engine_args().join(" "),
            disk: self.disk_gb,
            ports: vec![format!("{}/http", self.port)],
            env: vars,
            gpu: GpuRequest {
                id: self.gpu_id.clone(),
                count: self.gpu_count,
            },
            cloud: self.cloud,
            data_center_ids: self.data_centers.clone(),
        })
    }
}

/// A pod environment value names a variable that is not set here.
#[derive(Debug, thiserror::Error)]
#[error("pod.env.{key} refers to ${name}, which is not set in the environment")]
pub struct UnsetVar {
    pub key: String,
    pub name: String,
}

#[cfg(test)]
mod tests;
