//! Server-side observation: `/metrics` scrapes and GPU samples, reduced to canonical series and
//! per-phase figures (`core::prom` parses, `core::server` adapts and summarises, `scrape` does the IO).

pub mod gpu;
pub mod scrape;
