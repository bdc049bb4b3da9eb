//! A seeded random workload (`tests/c/workload.c`): four threads churn through every
//! interposed call, a few gated forks churn on their own. At every checkpoint the report of the
//! parent, and of each fork child, equals its `/proc/PID/fd` with nothing untracked, missed or
//! skipped.
use crate::common::*;

/// The seed: `WORKLOAD_SEED` to replay a failure, else a new one each run (printed).
fn seed() -> u64 {
    std::env::var("WORKLOAD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000_007
        })
}

fn run(seed: u64, rounds: u32) {
    // Shown with the failure: replay with WORKLOAD_SEED=<seed>.
    eprintln!("workload seed {seed} ({rounds} rounds)");
    let prog = build_c_once("workload", &["-O1", "-g"]);
    let dir = scratch(&format!("workload-{seed}"));
    let report = dir.join("report.jsonl");
    let stderr = dir.join("stderr.txt");
    let mut cmd = guarded(&prog, &report);
    cmd.arg(seed.to_string()).arg(rounds.to_string()).arg(&dir);
    stderr_to(&mut cmd, &stderr);
    let mut s = Stepper::spawn(cmd, &report);
    let (mut rounds_seen, mut children) = (0, 0);
    while let Some((name, lines)) = s.next_checkpoint() {
        if name == "child" {
            let pid: u32 = value_after(&lines, "CHILD ");
            let kernel = proc_fds(pid);
            let r = s.report_of(pid);
            assert_exact(&r, &kernel);
            children += 1;
        } else {
            let kernel = proc_fds(s.pid());
            let r = s.report_now();
            assert_exact(&r, &kernel);
            if name.starts_with("round-") {
                rounds_seen += 1;
                // Sanity: the workload really holds fds of many kinds at a checkpoint.
                assert!(r["open"].as_u64().unwrap() > 20, "{r}");
            }
        }
        s.resume();
    }
    let out = s.finish();
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(out.status.success(), "{:?}\n{err}", out.status);
    assert!(err.is_empty(), "stderr:\n{err}");
    assert_eq!(rounds_seen, rounds);
    assert_eq!(children, rounds / 2, "one fork child in every other round");
}

#[test]
fn random_workload_reports_match_proc_in_parent_and_fork_children() {
    run(seed(), 6);
}

/// A fixed seed, so that a regression found once stays covered.
#[test]
fn random_workload_with_a_fixed_seed() {
    run(20261122, 4);
}
