//! Not a test: the line a plain `cargo test` prints about the tests it left
//! out. Tests that need root or tools beyond the build's (eBPF, network
//! namespaces, nft, tcpspy, Chromium, mounts) sit behind the `system-tests`
//! feature of their crate, so a contributor without root gets the unit tests
//! passing; `scripts/test` (as root) turns the feature on and runs them all.

fn main() {
    if !cfg!(feature = "system-tests") {
        println!(
            "system tests skipped: they need root and real parts (eBPF, network namespaces, \
             nft, tcpspy, Chromium); run every test as root with `scripts/test` \
             (cargo test --workspace --features system-tests)"
        );
    }
}
