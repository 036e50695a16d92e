//! The pure core: values in, values out. Nothing under `core/` reads the clock, the
//! environment, files or the network (a test fails the build if one does), so everything here
//! is tested without setting anything up.
//!
//! Leaves first: `diag` (where an input's mistake is), `units` (formatting of units and
//! times), `catalog` (the names assertions may use).

pub mod catalog;
pub mod diag;
pub mod units;
