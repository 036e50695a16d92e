//! The calibration grid: `inferlab calibrate`'s measurement for each client runtime
//! (one and two worker threads), printed as tables. This is where the client runtime's default
//! worker count comes from.
//!
//! `cargo bench --bench calibrate` runs the whole grid (C = 1, 64, 256, 512 and the ceiling
//! search, about a minute per runtime). Under `cargo test --benches` it runs one small level as
//! a smoke test.

use inferlab::calibrate::{self, CalibrateOptions};
use inferlab::run;
use std::time::Duration;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let opts = if full {
        CalibrateOptions {
            rounds: 8,
            ..CalibrateOptions::default()
        }
    } else {
        CalibrateOptions {
            concurrency: vec![8],
            rounds: 3,
            itl: Duration::from_millis(2),
            tokens: 8,
            ceiling_itls: Vec::new(),
            ..CalibrateOptions::default()
        }
    };
    let workers: &[usize] = if full { &[1, 2] } else { &[1] };
    for &w in workers {
        let rt = run::client_runtime(Some(w)).expect("runtime");
        let cal = rt
            .block_on(calibrate::calibrate(&opts, |_| {}))
            .expect("calibration");
        println!("{}", calibrate::table(&cal));
        assert!(
            cal.levels.iter().all(|l| l.failed == 0),
            "requests failed against the truth server"
        );
    }
}
