//! Whether a model fits a GPU: known models' shapes, GPUs' memory, and the arithmetic (weights
//! plus the KV cache the deployment's context and concurrency need, plus overhead).

use super::{Deployment, Shape};
use crate::runpod::api::CatalogGpu;
use serde::Serialize;
use std::fmt::Write as _;

/// Common models (public configs). Matched on the model name's last path part, ignoring case
/// and an `-Instruct`/`-Chat` suffix.
pub const MODELS: &[(&str, Shape)] = &[
    ("llama-3.2-1b", shape(1.24, 16, 8, 64)),
    ("llama-3.2-3b", shape(3.21, 28, 8, 128)),
    ("llama-3.1-8b", shape(8.03, 32, 8, 128)),
    ("meta-llama-3-8b", shape(8.03, 32, 8, 128)),
    ("llama-3.1-70b", shape(70.6, 80, 8, 128)),
    ("llama-3.3-70b", shape(70.6, 80, 8, 128)),
    ("meta-llama-3-70b", shape(70.6, 80, 8, 128)),
    ("llama-3.1-405b", shape(405.9, 126, 8, 128)),
    ("mistral-7b-v0.3", shape(7.25, 32, 8, 128)),
    ("mixtral-8x7b-v0.1", shape(46.7, 32, 8, 128)),
    ("qwen2.5-7b", shape(7.62, 28, 4, 128)),
    ("qwen2.5-14b", shape(14.8, 48, 8, 128)),
    ("qwen2.5-32b", shape(32.8, 64, 8, 128)),
    ("qwen2.5-72b", shape(72.7, 80, 8, 128)),
    ("qwen3-8b", shape(8.19, 36, 8, 128)),
    ("qwen3-32b", shape(32.8, 64, 8, 128)),
    ("gemma-2-9b", shape(9.24, 42, 8, 256)),
    ("gemma-2-27b", shape(27.2, 46, 16, 128)),
];

const fn shape(params_b: f64, layers: u32, kv_heads: u32, head_dim: u32) -> Shape {
    Shape {
        params_b,
        layers,
        kv_heads,
        head_dim,
    }
}

/// GPU ids and their memory in GB (the offline table; the live catalog wins when a key is set).
pub const GPUS: &[(&str, f64)] = &[
    ("NVIDIA H100 80GB HBM3", 80.0),
    ("NVIDIA H100 PCIe", 80.0),
    ("NVIDIA H100 NVL", 94.0),
    ("NVIDIA H200", 141.0),
    ("NVIDIA B200", 180.0),
    ("NVIDIA A100 80GB PCIe", 80.0),
    ("NVIDIA A100-SXM4-80GB", 80.0),
    ("AMD Instinct MI300X OAM", 192.0),
    ("NVIDIA GeForce RTX 4090", 24.0),
    ("NVIDIA GeForce RTX 5090", 32.0),
    ("NVIDIA L40S", 48.0),
    ("NVIDIA L4", 24.0),
    ("NVIDIA RTX A6000", 48.0),
    ("NVIDIA RTX 6000 Ada Generation", 48.0),
];

pub fn gpu_memory_gb(id: &str) -> Option<f64> {
    GPUS.iter().find(|(g, _)| *g == id).map(|(_, m)| *m)
}

/// The shape of a model by name, from [`MODELS`].
pub fn known_shape(model: &str) -> Option<Shape> {
    let base = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let base = base
        .trim_end_matches("-instruct")
        .trim_end_matches("-chat")
        .to_string();
    MODELS.iter().find(|(n, _)| *n == base).map(|(_, s)| *s)
}

impl Deployment {
    /// The memory arithmetic for this deployment on `count` × `gpu_gb` GB.
    pub fn fit(&self, gpu_gb: f64, count: u32) -> Fit {
        let weights = self.shape.params_b * 1e9 * self.dtype.bytes();
        // K and V, per layer and KV head, at the KV cache's dtype (the weights' for 16-bit
        // models; 8-bit caches are an engine option this plan does not assume).
        let kv_bytes = self.dtype.bytes().max(2.0);
        let kv_per_token = 2.0
            * f64::from(self.shape.layers)
            * f64::from(self.shape.kv_heads)
            * f64::from(self.shape.head_dim)
            * kv_bytes;
        let tokens = f64::from(self.context) * f64::from(self.concurrency);
        let kv = kv_per_token * tokens;
        let overhead = OVERHEAD * (weights + kv);
        let need = weights + kv + overhead;
        let usable = gpu_gb * 1e9 * f64::from(count) * self.gpu_memory_utilization;
        Fit {
            weights_gb: weights / 1e9,
            kv_per_token_kib: kv_per_token / 1024.0,
            kv_tokens: tokens,
            kv_gb: kv / 1e9,
            overhead_gb: overhead / 1e9,
            need_gb: need / 1e9,
            usable_gb: usable / 1e9,
            fits: need <= usable,
        }
    }

    /// The fit on the deployment's own GPU, from the offline table.
    pub fn fit_own(&self) -> Fit {
        self.fit(gpu_memory_gb(&self.gpu_id).unwrap_or(0.0), self.gpu_count)
    }

    /// The catalog's available GPUs that this deployment fits on (its GPU count of them, at its
    /// cloud's price), cheapest first. A GPU with no memory figure (in the catalog or the
    /// offline table) or no price is left out: it cannot be judged.
    pub fn fitting_gpus(&self, catalog: &[CatalogGpu]) -> Vec<GpuOption> {
        let mut options: Vec<GpuOption> = catalog
            .iter()
            .filter(|g| g.availability.as_deref() != Some("NONE"))
            .filter_map(|g| {
                let memory_gb = g.memory.or_else(|| gpu_memory_gb(&g.id))?;
                let price = self.cloud.price(g.price.as_ref()?)?;
                self.fit(memory_gb, self.gpu_count).fits.then(|| GpuOption {
                    id: g.id.clone(),
                    memory_gb,
                    per_hour_usd: price * f64::from(self.gpu_count),
                })
            })
            .collect();
        options.sort_by(|a, b| a.per_hour_usd.total_cmp(&b.per_hour_usd));
        options
    }
}

/// A GPU type a deployment fits on, and what its pod would cost.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuOption {
    pub id: String,
    pub memory_gb: f64,
    /// For all of the deployment's GPUs.
    pub per_hour_usd: f64,
}

/// Activations, CUDA graphs, the allocator's slack: a share of weights + KV cache.
pub const OVERHEAD: f64 = 0.15;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Fit {
    pub weights_gb: f64,
    pub kv_per_token_kib: f64,
    pub kv_tokens: f64,
    pub kv_gb: f64,
    pub overhead_gb: f64,
    pub need_gb: f64,
    pub usable_gb: f64,
    pub fits: bool,
}

/// `inferlab plan`'s text: the arithmetic, line by line, and the verdict.
pub fn explain(d: &Deployment, fit: &Fit, gpu_gb: f64) -> String {
    let mut out = String::new();
    let s = d.shape;
    let _ = writeln!(
        out,
        "{}: {} on {} × {} ({} GB each), {}",
        d.name,
        d.model,
        d.gpu_count,
        d.gpu_id,
        gpu_gb,
        d.engine.as_str()
    );
    let _ = writeln!(
        out,
        "  weights   {:.1} B params × {} bytes ({:?})                = {:>8.1} GB",
        s.params_b,
        d.dtype.bytes(),
        d.dtype,
        fit.weights_gb
    );
    let _ = writeln!(
        out,
        "  KV cache  2 × {} layers × {} KV heads × {} head dim × {} bytes = {:.0} KiB/token",
        s.layers,
        s.kv_heads,
        s.head_dim,
        d.dtype.bytes().max(2.0),
        fit.kv_per_token_kib
    );
    let _ = writeln!(
        out,
        "            × {} context × {} sequences = {:.0} tokens        = {:>8.1} GB",
        d.context, d.concurrency, fit.kv_tokens, fit.kv_gb
    );
    let _ = writeln!(
        out,
        "  overhead  {:.0} % of weights + KV cache                  = {:>8.1} GB",
        OVERHEAD * 100.0,
        fit.overhead_gb
    );
    let _ = writeln!(
        out,
        "  needed                                                  = {:>8.1} GB",
        fit.need_gb
    );
    let _ = writeln!(
        out,
        "  usable    {} × {} GB × {} memory utilization             = {:>8.1} GB",
        d.gpu_count, gpu_gb, d.gpu_memory_utilization, fit.usable_gb
    );
    let _ = writeln!(
        out,
        "  {}",
        if fit.fits {
            format!("fits, {:.1} GB to spare", fit.usable_gb - fit.need_gb)
        } else {
            format!("DOES NOT FIT: {:.1} GB short", fit.need_gb - fit.usable_gb)
        }
    );
    out
}
