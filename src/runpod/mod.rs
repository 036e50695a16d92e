//! RunPod: the REST v2 client (`api`), deployment files and the model-to-GPU fit (`deploy`),
//! and the pod lifecycle with guaranteed teardown and a ledger of the pods this tool created
//! (`lifecycle`).

pub mod api;
pub mod deploy;
pub mod lifecycle;
pub mod matrix;
