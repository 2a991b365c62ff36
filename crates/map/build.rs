//! Builds the web UI (web/, bundled by esbuild through `node web/build.mjs`)
//! into OUT_DIR, where `src/assets.rs` embeds it. Building here rather than
//! embedding a prebuilt web/dist means the binary can never carry assets that
//! are older than their sources.
//!
//! It needs Node and the npm packages of web/ (`npm ci`, which
//! `scripts/build-web` runs, as does `scripts/dev-setup`); without them the
//! build stops with a message that says so.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let web = manifest.join("../../web");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("web");
    for watched in ["src", "build.mjs", "package.json", "package-lock.json"] {
        println!("cargo:rerun-if-changed={}", web.join(watched).display());
    }
    // `npm ci` rewrites this file: new package versions mean a new bundle.
    println!(
        "cargo:rerun-if-changed={}",
        web.join("node_modules/.package-lock.json").display()
    );
    println!("cargo:rerun-if-env-changed=NODE");

    if !web.join("node_modules/esbuild").is_dir() || !web.join("node_modules/d3").is_dir() {
        fail(&format!(
            "the web UI's npm packages are not installed ({} lacks esbuild or d3).\n\
             Run scripts/build-web (scripts/dev-setup runs it): it runs `npm ci` in web/.",
            web.join("node_modules").display()
        ));
    }
    let node = env::var("NODE").unwrap_or_else(|_| "node".to_owned());
    let status = Command::new(&node)
        .arg(web.join("build.mjs"))
        .arg(&out)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!("`{node} web/build.mjs` failed ({status}); its messages are above")),
        Err(err) => fail(&format!("cannot run `{node}` to build the web UI: {err}. Install Node.js 20 (scripts/dev-setup)")),
    }
    for file in ["index.html", "app.js", "app.css"] {
        if !out.join(file).is_file() {
            fail(&format!(
                "the web build did not write {}",
                out.join(file).display()
            ));
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: connscope-map: {message}");
    std::process::exit(1);
}
