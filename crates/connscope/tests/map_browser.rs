#![cfg(feature = "system-tests")] // Debian's Chromium, driven from node
//! The connection map in a real browser: runs `web/tests/map-e2e.mjs` (headless
//! Debian Chromium driven by playwright-core) against this build's `connscope`
//! binary: a real collector on 127.0.0.1 with a real SQLite store, and the
//! `map export` file opened from file://. The script prints one line per check
//! and `N passed, N failed`; screenshots land in target/tmp/map-e2e/.
//!
//! `web/tests/map-office.mjs` measures readability (issue 17) on the generated
//! office store (`Office::map_store`), served and exported, and at 2,000
//! nodes / 10,000 edges; screenshots in target/tmp/map-office/.

use std::path::Path;
use std::process::Command;

use connscope_firewall::office::Office;

/// Runs a browser script with `args`; passes when it reports `N passed, 0 failed`.
fn run_script(script: &str, args: &[&std::ffi::OsStr]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new("node")
        .arg(root.join(script))
        .args(args)
        .current_dir(&root)
        .output()
        .expect("node runs (Node.js 20; scripts/dev-setup installs the rest)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed"))
        .unwrap_or("");
    assert!(
        output.status.success()
            && summary.ends_with(" 0 failed")
            && !summary.starts_with("0 passed"),
        "{script} failed ({}): {summary}\n{stdout}",
        output.status
    );
}

#[test]
fn the_map_draws_filters_and_exports_in_chromium() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("map-e2e");
    run_script(
        "web/tests/map-e2e.mjs",
        &[
            "--bin".as_ref(),
            env!("CARGO_BIN_EXE_connscope").as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
    );
    for shot in ["served-details.png", "export.png"] {
        assert!(out.join(shot).is_file(), "no screenshot {shot}");
    }
}

#[test]
fn the_office_map_is_readable_at_first_sight_and_fully_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("office.db");
    Office::map_store(&db).expect("the office store is written");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("map-office");
    run_script(
        "web/tests/map-office.mjs",
        &[
            "--bin".as_ref(),
            env!("CARGO_BIN_EXE_connscope").as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
    );
    for shot in ["office-first.png", "office-open.png", "big-open.png"] {
        assert!(out.join(shot).is_file(), "no screenshot {shot}");
    }
}
