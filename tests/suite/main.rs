//! fdguard's integration tests: real programs (C programs built from `tests/c/`, the examples,
//! python3, redis-server, node, java, nginx) run under `LD_PRELOAD=libfdguard.so` or the `fdguard`
//! command.
//!
//! # One crate
//! Every former `tests/*.rs` file is a module here, and the harness (`common`) is compiled
//! once, into one test binary (`autotests = false` and one `[[test]]` in `Cargo.toml`). Run one
//! module with `cargo test --test suite calls::`, one test with its full name. Chosen by
//! measurement on the 2-core machine, idle, debug, the library already built:
//!
//! | layout | building the tests from clean | running them |
//! | --- | --- | --- |
//! | 19 binaries, each compiling the harness (before) | 16.7 s | 145 s |
//! | 19 binaries and a harness crate | 9.5 s | 118 s |
//! | one crate (this) | 7.0 s | 80 s |
//!
//! (`cargo test --workspace --all-targets`, `--no-run`, then run with `--test-threads=8` as
//! `scripts/test.sh` does; "before" ran with the default two threads and the old timing
//! checks.) Separate binaries run one after another, each mostly waiting on its slowest tests;
//! in one process the tests of all modules share the threads, and the tests that measure CPU
//! share one lock (`common::one_at_a_time`).
//!
//! # What holds on a busy machine
//! - Timing and CPU figures are compared with what was measured in the same test, never with an
//!   absolute figure: the same program without fdguard, a control server's round trips paired
//!   with the measured ones, or a busy loop's share of a core over the same window
//!   (`common::pace`). Figures that are fdguard's own stay: at most 20 accept failures a second
//!   under its backoff (a busy machine only lowers that), accepting again within its 1 s
//!   backoff period (what the machine adds is widened by the measured slowdown), and the spin a
//!   calm server is judged against is one core where a test does not measure it without
//!   fdguard (`select`, sleep mode: single-threaded loops, which the other tests show spin at
//!   a whole core). A precondition ("without fdguard the server spins") is measured again,
//!   up to `pace::TRIES` windows, before the test gives up. Waits for an event (a report, a log
//!   line, a connection) give up only after 5 to 90 s, far beyond what they take: they bound a
//!   test that would hang, they are not figures the tests judge.
//! - Every process a test starts ends with the test, pass or fail (`common::procs`).
//! - A test that needs a program that is missing fails and names it (`common::require`).
mod common;

mod accept_guard;
mod attach_dlopen;
mod calls;
mod cli_attach;
mod cli_inspect;
mod cli_limits;
mod cli_report;
mod cli_run;
mod cli_top;
mod cli_triage;
mod config;
mod core;
mod ebpf_attach;
mod failures;
mod hostile_names;
mod hot_path;
mod incidents;
mod jvm_attach;
mod modes;
mod process;
mod programs;
mod python;
mod requests;
mod runtime_java;
mod runtime_node;
mod runtime_python;
mod signals;
mod snapshot;
mod stacks;
mod trace;
mod trace_reports;
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
