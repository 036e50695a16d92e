//! The pure views of a run's results: what the summary says of the run's conditions
//! (`status`).

pub mod status;

pub use status::{PromptLengths, ServerMetrics};
