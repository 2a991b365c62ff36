//! What the browser system tests share: running a script of `web/tests/`
//! (headless Debian Chromium driven by playwright-core, from node) against
//! this build's `connscope` binary. The scripts print one line per check and
//! `N passed, N failed` last; a test passes when the script exits 0 and that
//! line counts some passes and no failure.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root, where `web/` is.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `web/tests/SCRIPT --bin BINARY --out OUT ARGS...` and fails the test
/// unless every check passed; the script's output is printed either way.
pub fn run_browser_script(script: &str, out: &Path, args: &[&OsStr]) {
    let root = workspace_root();
    let output = Command::new("node")
        .arg(root.join("web/tests").join(script))
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_connscope"))
        .arg("--out")
        .arg(out)
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
        "browser test {script} failed ({}): {summary}\n{stdout}",
        output.status
    );
}
