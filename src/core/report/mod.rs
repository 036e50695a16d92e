//! The pure views of a run's results: the run's summary as written and read back (`summary`),
//! and what it says of the run's conditions (`status`).

pub mod status;
pub mod summary;

pub use status::{PromptLengths, ServerMetrics};
