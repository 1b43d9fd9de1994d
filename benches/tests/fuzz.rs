//! Mutation fuzzing in CI (issue 11): at least 2,000 mutants of every testdata format, and
//! the committed corpus of earlier crashers, through the real binaries under an
//! address-space and a time limit. The seed changes with every run and is printed; a failure
//! is repeated with `tracemark-bench fuzz --small --seed N`, and its mutant is saved under
//! target/fuzz-findings for the corpus (testdata/hostile/).

use std::time::Duration;

use tracemark_bench::fuzz::{Config, run};

#[test]
fn two_thousand_mutants_break_nothing() {
    // target/debug/deps/fuzz-* -> target/debug, where `cargo test --workspace` put the tools.
    let exe = std::env::current_exe().unwrap();
    let bin_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    assert!(
        bin_dir.join("tracemark-embed").exists() && bin_dir.join("tracemark-detect").exists(),
        "the tools are not built in {}: run `cargo test --workspace`",
        bin_dir.display()
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cfg = Config {
        bin_dir: bin_dir.clone(),
        mutants: 2000,
        // Far above the minute it takes on 2 cores: the count is what is asserted.
        budget: Duration::from_secs(15 * 60),
        batch: 50,
        seed,
        full_seeds: false,
        save: bin_dir.parent().unwrap().join("fuzz-findings"),
    };
    let report = run(&cfg).unwrap();
    let md = report.to_markdown(&cfg);
    eprintln!("{md}");
    assert!(report.failures.is_empty(), "{md}");
    assert!(report.mutants >= 2000, "{md}");
}
