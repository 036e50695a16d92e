//! What a command's outcome means to the shell.

/// Ordered by severity, so the worst of several (a matrix of runs) is their `max`; the binary
/// turns it into an exit code once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: everything ran and passed.
    Success,
    /// 1: an assertion failed, a replay did not match its recording, a deployment does not
    /// fit, or a pod could not be terminated.
    Failed,
    /// 2: bad input, or a trial that could not run.
    BadInput,
    /// 130: stopped by Ctrl-C (SIGINT); what completed was summarised and written.
    Interrupted,
    /// 143: stopped by SIGTERM.
    Terminated,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::BadInput => 2,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }

    /// The exit for a run stopped by a signal (`SIGTERM`, `SIGINT`, …).
    pub fn stopped_by(signal: &str) -> Exit {
        if signal == "SIGTERM" {
            Exit::Terminated
        } else {
            Exit::Interrupted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_outcome_wins_and_signals_map_to_their_codes() {
        let all = [
            Exit::Failed,
            Exit::Success,
            Exit::Terminated,
            Exit::BadInput,
        ];
        assert_eq!(all.iter().max(), Some(&Exit::Terminated));
        assert_eq!(Exit::Failed.max(Exit::BadInput).code(), 2);
        assert_eq!(Exit::stopped_by("SIGTERM").code(), 143);
        assert_eq!(Exit::stopped_by("SIGINT").code(), 130);
    }
}
