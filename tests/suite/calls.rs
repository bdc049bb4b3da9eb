//! Every interposed call, one test per scenario of `tests/c/calls.c`: the fds a call creates
//! appear in the report with the right `kind`, `call` and `desc`, and disappear when released.
//! At every checkpoint the report must also equal `/proc/PID/fd` with nothing untracked, missed
//! or skipped.
use crate::common::*;

use std::path::PathBuf;

/// calls.c, built once: fortified like distribution builds, so `__open_2` & co are exercised.
fn calls_program() -> PathBuf {
    build_c_once("calls", &["-O2", "-D_FORTIFY_SOURCE=2", "-g"])
}

/// Runs one scenario and checks every checkpoint it stops at.
fn run(scenario: &str) {
    let dir = scratch(&format!("calls-{scenario}"));
    let report = dir.join("report.jsonl");
    let stderr = dir.join("stderr.txt");
    let mut cmd = guarded(&calls_program(), &report);
    cmd.arg(scenario).arg(&dir);
    stderr_to(&mut cmd, &stderr);
    let p = run_protocol(cmd, &report);
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        p.output.status.success(),
        "{scenario}: {:?}\n{err}",
        p.output.status
    );
    assert!(err.is_empty(), "{scenario}: unexpected stderr:\n{err}");
    assert_eq!(p.checkpoints.last().map(String::as_str), Some("released"));
    match p.lines.iter().find(|l| l.starts_with("SKIP ")) {
        Some(skip) => eprintln!("{scenario}: {skip}"),
        // Every scenario names what it created and what it released.
        None => assert!(
            p.checked >= 2,
            "{scenario}: only {} expectations",
            p.checked
        ),
    }
}

macro_rules! scenarios {
    ($($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*

        /// The scenarios calls.c has are exactly the ones tested here (none silently left out).
        #[test]
        fn every_scenario_in_calls_c_has_a_test() {
            let out = plain(&calls_program()).arg("list").arg("/").output().unwrap();
            let listed: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
            assert_eq!(listed, vec![$(stringify!($name)),*]);
        }
    };
}

scenarios! {
    open open64 openat openat64 creat creat64 open_2 open64_2 openat_2 openat64_2
    fopen fopen64 freopen freopen64 freopen_null fdopen opendir fdopendir tmpfile tmpfile64
    mkstemp mkstemp64 mkostemp mkostemp64 mkstemps mkstemps64 mkostemps mkostemps64
    memfd_create posix_openpt getpt popen socket socketpair accept accept4 recvmsg recvmmsg
    pipe pipe2 epoll_create epoll_create1 eventfd timerfd_create signalfd inotify_init
    inotify_init1 fanotify_init pidfd_open dup dup2 dup2_onto_open dup3_onto_open
    dup2_onto_stdin fcntl fcntl64 close_range close_range_cloexec closefrom fcloseall
}
