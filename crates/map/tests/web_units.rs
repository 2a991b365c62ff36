//! The map UI's JavaScript unit tests (web/tests/unit/: the graph model, the URL
//! state, the report command line), run with Node's test runner under cargo.

use std::path::Path;
use std::process::Command;

#[test]
fn web_unit_tests_pass() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    let output = Command::new("node")
        .args(["--test", "tests/unit/"])
        .current_dir(&web)
        .output()
        .expect("node runs (Node.js 20)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "node --test failed ({})",
        output.status
    );
    assert!(
        stdout.contains("# fail 0") && !stdout.contains("# pass 0"),
        "{stdout}"
    );
}
