#![cfg(feature = "system-tests")] // root: nft loaded in network namespaces
//! `firewall check` proven against the kernel: generated rulesets loaded with
//! `nft -f` into namespaces, real connections through them, and the checker's
//! verdict compared flow by flow (see `differential/mod.rs`).
//!
//! The seed is printed; `CONNSCOPE_DIFF_SEED=N` repeats a run and
//! `CONNSCOPE_DIFF_ONLY=I` only its ruleset I. The long run (2,000 rulesets,
//! the figure in docs/FIREWALL.md) is `scripts/firewall-differential`.

mod common;
mod differential;

use differential::{assert_agreement, run, Config};

#[test]
fn checker_agrees_with_the_kernel_on_generated_rulesets() {
    let config = Config::from_env(240, 3, 3);
    let report = run(&config);
    assert!(
        report.flows >= 200 || config.only.is_some(),
        "{}",
        report.summary()
    );
    assert_agreement(&config, &report);
}

/// The long run: `cargo test -p connscope-firewall --features system-tests
/// --test kernel_differential -- --ignored` (what the script does).
#[test]
#[ignore = "long: 2,000 rulesets, run by scripts/firewall-differential"]
fn checker_agrees_with_the_kernel_long_run() {
    let config = Config::from_env(2000, 4, 4);
    let report = run(&config);
    assert_agreement(&config, &report);
}
