//! Every experiment file becomes tests: one trial per experiment × target, named
//! `<experiment>::<target>`, its kind the mode (`live`, `record`, `replay`). A trial that cannot
//! run is ignored with the reason; an experiment file that does not parse is a failing trial.
//! The cases are `inferlab::harness::cases`' (discovery, naming and judging shared with the
//! CLI); here each becomes a libtest-mimic trial and its snapshot is compared with insta.
//!
//! `cargo test --test experiments -- prefix_cache` runs the prefix_cache trials. Trials run one
//! at a time unless `--test-threads` says otherwise: measurements must not compete.

use inferlab::harness::cases::{self, Case, CaseRun};
use libtest_mimic::{Arguments, Completion, Trial};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads.get_or_insert(1);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cases = match cases::all(&root, inferlab::env::process) {
        Ok(cases) => cases,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let trials = cases.into_iter().map(|c| trial(c, &root)).collect();
    libtest_mimic::run(&args, trials).exit_code()
}

fn trial(case: Case, root: &Path) -> Trial {
    let snapshots = root.join("snapshots");
    match case.run {
        CaseRun::Ignored(why) => {
            Trial::ignorable_test(case.name, || Ok(Completion::ignored_with(why)))
        }
        CaseRun::Fails(why) => Trial::test(case.name, || Err(why.into())),
        CaseRun::Run(run) => Trial::test(case.name, move || {
            let Some((name, view)) = run()? else {
                return Ok(());
            };
            let mut settings = insta::Settings::clone_current();
            settings.set_snapshot_path(snapshots);
            settings.set_prepend_module_to_snapshot(false);
            settings.set_omit_expression(true);
            settings.bind(|| insta::assert_json_snapshot!(name, view));
            Ok(())
        }),
    }
    .with_kind(case.kind)
}
