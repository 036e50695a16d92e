//! The integration tests, one binary (one link of the library instead of nine): each module an
//! area, all on loopback. `cargo test --test it -- truth::` runs one area.

mod cli;
mod common;
mod faults;
mod fixtures;
mod gate;
mod layering;
mod observe;
mod pacing;
mod replay;
mod runpod;
mod tokenizer;
mod truth;
mod watch;
