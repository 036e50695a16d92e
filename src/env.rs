//! The only reader of the process environment. Everything else takes an `env` function
//! (`&dyn Fn(&str) -> Option<String>`), so tests pass a closure instead of setting variables;
//! a target's own variables are named by [`target_var`].

/// Reads a variable of the process environment (`None` when unset or not Unicode).
pub fn process(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `INFERLAB_<TARGET>_<SUFFIX>`, the target name upper-cased with `-` as `_`.
pub fn target_var(target: &str, suffix: &str) -> String {
    format!(
        "INFERLAB_{}_{suffix}",
        target.to_uppercase().replace('-', "_")
    )
}

/// `INFERLAB_CLIENT_WORKERS`, when set to a positive number.
pub fn client_workers() -> Option<usize> {
    process("INFERLAB_CLIENT_WORKERS")
        .and_then(|v| v.parse().ok())
        .filter(|&w| w > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_variables_are_upper_case_with_underscores() {
        assert_eq!(target_var("vllm", "URL"), "INFERLAB_VLLM_URL");
        assert_eq!(
            target_var("my-sglang", "RUNPOD_POD"),
            "INFERLAB_MY_SGLANG_RUNPOD_POD"
        );
    }
}
