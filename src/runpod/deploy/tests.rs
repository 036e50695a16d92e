//! Deployment files: parsing, the matrix, the fit, the create body.

use super::*;

fn dep(model: &str, dtype: &str, gpu: &str, context: u32, conc: u32) -> Deployment {
    let src = format!(
        "engine = \"vllm\"\n[model]\nname = \"{model}\"\ndtype = \"{dtype}\"\ncontext = {context}\nconcurrency = {conc}\n[gpu]\nid = \"{gpu}\"\n"
    );
    parse("d.toml", "d", &src).unwrap()
}

#[test]
fn a_70b_bf16_model_does_not_fit_a_24_gb_card_and_an_8b_fits_80_gb() {
    let big = dep(
        "meta-llama/Llama-3.1-70B-Instruct",
        "bf16",
        "NVIDIA GeForce RTX 4090",
        8192,
        1,
    );
    let f = big.fit_own();
    assert!(!f.fits);
    assert!((f.weights_gb - 141.2).abs() < 0.1, "{f:?}");
    let text = explain(&big, &f, 24.0);
    assert!(text.contains("DOES NOT FIT"), "{text}");
    assert!(text.contains("141.2 GB"), "{text}");

    let small = dep(
        "meta-llama/Llama-3.1-8B-Instruct",
        "bf16",
        "NVIDIA H100 80GB HBM3",
        8192,
        16,
    );
    let f = small.fit_own();
    assert!(f.fits, "{f:?}");
    // 2 × 32 × 8 × 128 × 2 bytes = 128 KiB per token.
    assert_eq!(f.kv_per_token_kib, 128.0);
    assert!((f.kv_gb - 17.18).abs() < 0.01, "{f:?}");
}

#[test]
fn the_cheapest_fitting_gpu_comes_first_at_the_deployments_clouds_price() {
    use crate::runpod::api::{CatalogGpu, Cloud, Price};
    let gpu =
        |id: &str, memory: Option<f64>, secure: Option<f64>, community: Option<f64>| CatalogGpu {
            id: id.into(),
            name: None,
            memory,
            price: Some(Price { secure, community }),
            max_count: None,
            availability: Some("HIGH".into()),
        };
    let mut gone = gpu("NVIDIA H100 NVL", Some(94.0), Some(0.5), None);
    gone.availability = Some("NONE".into());
    let catalog = [
        gpu("NVIDIA H100 80GB HBM3", None, Some(2.99), Some(2.49)),
        gpu("NVIDIA A100 80GB PCIe", Some(80.0), Some(1.64), None),
        // Too small for the model, however cheap.
        gpu("NVIDIA GeForce RTX 4090", None, Some(0.69), Some(0.34)),
        // No memory figure anywhere, no price: neither can be judged.
        gpu("Some New GPU", None, Some(0.1), None),
        gpu("NVIDIA L40S", Some(48.0), None, None),
        gone,
    ];
    let mut d = dep(
        "meta-llama/Llama-3.1-8B-Instruct",
        "bf16",
        "NVIDIA H100 80GB HBM3",
        8192,
        16,
    );
    let ids = |d: &Deployment| -> Vec<(String, f64)> {
        d.fitting_gpus(&catalog)
            .into_iter()
            .map(|o| (o.id, o.per_hour_usd))
            .collect()
    };
    assert_eq!(
        ids(&d),
        [
            ("NVIDIA A100 80GB PCIe".to_string(), 1.64),
            ("NVIDIA H100 80GB HBM3".to_string(), 2.99)
        ]
    );
    // Two of them in the community cloud: two 4090s hold it (38.2 of 43.2 GB usable), and
    // each GPU's community price applies where it has one, its secure price otherwise.
    d.cloud = Cloud::Community;
    d.gpu_count = 2;
    assert_eq!(
        ids(&d),
        [
            ("NVIDIA GeForce RTX 4090".to_string(), 0.68),
            ("NVIDIA A100 80GB PCIe".to_string(), 3.28),
            ("NVIDIA H100 80GB HBM3".to_string(), 4.98)
        ]
    );
}

#[test]
fn errors_name_the_field_and_position() {
    let e = parse(
        "d.toml",
        "d",
        "engine = \"vllm\"\n[model]\nname = \"meta-llama/Llama-3.1-8B\"\ncontext = 4096\n[gpu]\nid = \"NVIDIA H1000\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("d.toml:6:6: gpu.id: unknown GPU id"), "{e}");
    let e = parse(
        "d.toml",
        "d",
        "engine = \"tgi\"\n[model]\nname = \"meta-llama/Llama-3.1-8B\"\ncontext = 4096\n[gpu]\nid = \"NVIDIA L4\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("d.toml:1:10: engine: unknown engine `tgi`"),
        "{e}"
    );
    let e = parse(
        "d.toml",
        "d",
        "engine = \"vllm\"\n[model]\nname = \"x/unknown-13b\"\ncontext = 4096\n[gpu]\nid = \"NVIDIA L4\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("model.name") && e.contains("model.shape ="),
        "{e}"
    );
    let e = parse(
        "d.toml",
        "d",
        "engine = \"vllm\"\n[model]\nname = \"meta-llama/Llama-3.1-8B\"\ncontext = 4096\n[gpu]\nid = \"NVIDIA L4\"\n[pod]\nenv = { HF_TOKEN = \"hf_abc\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("pod.env.HF_TOKEN") && !e.contains("hf_abc"),
        "{e}"
    );
}

#[test]
fn a_matrix_expands_to_every_combination() {
    let src = "[model]\ncontext = 4096\n[matrix]\nengine = [\"vllm\", \"sglang\"]\nmodel = [\"meta-llama/Llama-3.1-8B-Instruct\"]\ngpu = [\"NVIDIA H100 80GB HBM3\", \"NVIDIA L40S\"]\nimage = { vllm = \"vllm/vllm-openai:v0.11.0\" }\nparallel = 3\n";
    let cells = parse_all("m.toml", "m", src).unwrap();
    let names: Vec<&str> = cells.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "m-vllm-llama-3.1-8b-instruct-h100-80gb-hbm3",
            "m-vllm-llama-3.1-8b-instruct-l40s",
            "m-sglang-llama-3.1-8b-instruct-h100-80gb-hbm3",
            "m-sglang-llama-3.1-8b-instruct-l40s",
        ]
    );
    assert_eq!(cells[0].image, "vllm/vllm-openai:v0.11.0");
    assert_eq!(cells[2].image, "lmsysorg/sglang:latest");
    assert_eq!(cells[3].serves, "sglang");
    assert!(cells.iter().all(|d| d.parallel == 3));
    let e = parse("m.toml", "m", src).unwrap_err().to_string();
    assert!(e.contains("matrix of 4 deployments"), "{e}");
    // A bad element is named where it stands.
    let bad = src.replace("\"NVIDIA L40S\"", "\"NVIDIA L41\"");
    let e = parse_all("m.toml", "m", &bad).unwrap_err().to_string();
    assert!(
        e.starts_with("m.toml:6:33: matrix.gpu: unknown GPU id `NVIDIA L41`"),
        "{e}"
    );
}

#[test]
fn the_create_body_reads_secrets_at_run_time_and_sets_engine_flags() {
    let d = parse(
        "d.toml",
        "d",
        "engine = \"sglang\"\n[model]\nname = \"Qwen/Qwen2.5-7B-Instruct\"\ncontext = 4096\n[gpu]\nid = \"NVIDIA L40S\"\ncount = 2\n[pod]\nenv = { HF_TOKEN = \"$HF_TOKEN\" }\n",
    )
    .unwrap();
    let env = |k: &str| (k == "HF_TOKEN").then(|| "hf_secret".to_string());
    let c = d.create_request(&env).unwrap();
    assert_eq!(c.env["HF_TOKEN"], "hf_secret");
    assert_eq!(c.redacted().env["HF_TOKEN"], "[redacted]");
    assert!(
        c.args.contains("--enable-metrics --enable-cache-report"),
        "{}",
        c.args
    );
    assert!(c.args.contains("--tp 2"), "{}", c.args);
    assert_eq!(c.gpu.count, 2);
    assert_eq!(c.ports, vec!["8000/http"]);
    let none = |_: &str| None;
    assert!(
        d.create_request(&none)
            .unwrap_err()
            .to_string()
            .contains("$HF_TOKEN")
    );
}
