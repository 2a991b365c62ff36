#![cfg(feature = "system-tests")] // Debian's Chromium, driven from node
//! The connection map in a real browser: runs `web/tests/map-e2e.mjs` (headless
//! Debian Chromium driven by playwright-core) against this build's `connscope`
//! binary: a real collector on 127.0.0.1 with a real SQLite store, and the
//! `map export` file opened from file://. The script prints one line per check
//! and `N passed, N failed`; screenshots land in target/tmp/map-e2e/.

use std::path::Path;
use std::process::Command;

#[test]
fn the_map_draws_filters_and_exports_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("map-e2e");
    let output = Command::new("node")
        .arg(root.join("web/tests/map-e2e.mjs"))
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_connscope"))
        .arg("--out")
        .arg(&out)
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
        "browser test failed ({}): {summary}\n{stdout}",
        output.status
    );
    for shot in ["served-details.png", "export.png"] {
        assert!(out.join(shot).is_file(), "no screenshot {shot}");
    }
}
