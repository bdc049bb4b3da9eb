//! The hot path allocates nothing: every hooked call made after a warm-up allocates exactly what
//! it allocates without fdguard, counted by a malloc interposer loaded ahead of fdguard.
use crate::common::*;

use std::path::Path;

fn allocs(prog: &Path, preload: &str, env: &[(&str, &str)]) -> i64 {
    let out = command(prog)
        .env("LD_PRELOAD", preload)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    value_after(String::from_utf8_lossy(&out.stdout).lines(), "ALLOCS ")
}

#[test]
fn hooks_allocate_nothing_after_warm_up() {
    let dir = scratch("hot-path");
    let counter = dir.join("libcount_alloc.so");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/count_alloc.c");
    let ok = command("cc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&counter)
        .arg(src)
        .status()
        .unwrap();
    assert!(ok.success());
    let prog = build_c("hot_path", &dir, &["-O2"]);
    let native = allocs(&prog, counter.to_str().unwrap(), &[]);
    let both = format!("{} {}", counter.display(), lib_path().display());
    for env in [
        &[][..],
        &[("FDGUARD_DEPTH", "0")][..],
        &[("FDGUARD_CLOSE_STACKS", "1")][..],
    ] {
        assert_eq!(allocs(&prog, &both, env), native, "with fdguard {env:?}");
    }
    // The counter is live: fopen allocates its FILE on every round.
    assert!(native >= 20_000, "{native}");
}
