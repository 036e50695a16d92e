//! Server-side observation: `/metrics` scrapes and GPU samples, reduced to canonical series and
//! per-phase figures (`prom` parses, `canonical` adapts and summarises, `scrape` does the IO).

pub mod canonical;
pub mod gpu;
pub mod prom;
pub mod scrape;
