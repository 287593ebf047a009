//! Helpers shared by Cairn's end-to-end tests, which run real processes.

pub mod browser;
pub mod chaos;
pub mod e2e;

use std::path::PathBuf;

use cairn_chain::testkit::TestChain;

/// The chain the store crash test writes (the writer and the checker must
/// agree on it).
pub fn crash_chain() -> TestChain {
    TestChain::new("cairn-crash-test", 40, 1_000_000_000)
}

/// Path of a workspace binary (`cairn-node`, `cairn-genesis`, …) built into
/// the same target directory as the running test. `make test` builds them
/// all before running the tests.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> → target/<profile>/<name>; a binary
    // (`cairn-chaos`) lives in target/<profile> itself.
    let mut dir = exe.parent().expect("binaries live in a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps lives in target/<profile>");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --release --workspace --bins` first (make test does)",
        path.display()
    );
    path
}
