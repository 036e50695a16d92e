//! Results on disk and views for people: the results directory (`results`), the
//! deterministic snapshot view (`snapshot`), the phase table (`text`), and finished runs read
//! back for comparison (`load`). The run's summary itself is pure data in
//! [`crate::core::report::summary`], re-exported here.

pub mod dto;
pub mod load;
mod results;
pub mod rows;
mod snapshot;
mod text;

pub use crate::core::catalog::Mode;
pub use crate::core::report::summary::{
    Capacity, CapacityProbe, Cost, NamedSummary, RECOVERED_NOTE, REPEATS_NOTE,
    RESULTS_SCHEMA_VERSION, Recovered, Repeats, RunSummary, SERVERLESS_NOTE, SLICES_NOTE,
    SearchedOver, Serverless, ServerlessPhase, Slices, VerdictRow, repeated_value,
};
pub use crate::core::report::{PromptLengths, ServerMetrics};
pub use results::{RequestRow, RequestWriter, ResultsDir};
pub use snapshot::{
    SnapshotAssertion, SnapshotFidelity, SnapshotPhase, SnapshotView, snapshot_view,
};
pub use text::{phase_table, verdict_lines};
