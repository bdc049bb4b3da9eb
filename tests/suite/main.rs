//! fdguard's integration tests: real programs (C programs built from `tests/c/`, the examples,
//! python3, redis-server) run under `LD_PRELOAD=libfdguard.so` or the `fdguard` command.
//!
//! # One crate
//! Every former `tests/*.rs` file is a module here, and the harness (`common`) is compiled
//! once, into one test binary (`autotests = false` and one `[[test]]` in `Cargo.toml`). Run one
//! module with `cargo test --test suite calls::`, one test with its full name. Measured on the
//! 2-core machine (debug, the library already built), against 19 binaries that each compiled
//! the harness: building the tests from clean took 16 s before, 9 s as one crate, 12 s as 19
//! binaries linking a shared harness crate; the suite ran in 145 s before (one binary after
//! another), 70 s as one crate with 4 test threads. The binaries of a harness crate would still
//! run one after another, and tests in different files could not share the one lock that
//! measurements take (`common::one_at_a_time`).
//!
//! # What holds on a busy machine
//! - Timing and CPU figures are compared with what was measured in the same test, never with an
//!   absolute figure: the same program without fdguard, a control server's round trips paired
//!   with the measured ones, or a busy loop's share of a core over the same window
//!   (`common::pace`). A precondition ("without fdguard the server spins") is measured again,
//!   up to `pace::TRIES` windows, before the test gives up. Waits for an event (a report, a log
//!   line) give up only after 10 to 60 s, a hundred times what they take.
//! - Every process a test starts ends with the test, pass or fail (`common::procs`).
//! - A test that needs a program that is missing fails and names it (`common::require`).
mod common;

mod accept_guard;
mod calls;
mod cli_attach;
mod cli_inspect;
mod cli_report;
mod cli_run;
mod config;
mod core;
mod failures;
mod hot_path;
mod incidents;
mod modes;
mod process;
mod programs;
mod python;
mod signals;
mod stacks;
mod triggers;
mod workload;

/// Test modules start processes only through `common` (`command`, `Proc`, `Stepper`,
/// `Server`), which end them with the test: a `Command::new` or a `.spawn()` of their own
/// would outlive a failed test.
#[test]
fn suite_rules() {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suite");
    for entry in std::fs::read_dir(&here).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for banned in ["Command::new(", ".spawn()"] {
            assert!(
                !text.contains(banned),
                "{}: {banned} (use common::command and common::Proc)",
                path.display()
            );
        }
    }
}
