//! End-to-end basics: a report on SIGUSR2 lists exactly the kernel's fds, with kinds and calls.
use crate::common::*;

#[test]
fn report_on_signal_matches_proc_and_forgets_closed_fds() {
    let dir = scratch("basic");
    let prog = build_c("basic", &dir, &["-O1", "-g"]);
    let report = report_path(&dir);
    let mut s = Stepper::spawn(guarded(&prog, &report), &report);

    let (name, lines) = s.next_checkpoint().expect("checkpoint");
    assert_eq!(name, "open");
    let fds: Vec<i64> = lines[0]
        .strip_prefix("FDS ")
        .unwrap()
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    let kernel = proc_fds(s.pid());
    let r = s.report_now();
    assert_eq!(r["fdguard"], 1);
    assert_eq!(r["reason"], "signal");
    assert_eq!(r["pid"], s.pid());
    assert_matches_kernel(&r, &kernel, &[]);
    let row = fd_row(&r, fds[0]).unwrap();
    assert_eq!(
        (row["kind"].as_str(), row["call"].as_str()),
        (Some("file"), Some("fopen"))
    );
    assert_eq!(row["desc"], "/etc/hosts");
    let row = fd_row(&r, fds[1]).unwrap();
    assert_eq!(
        (row["kind"].as_str(), row["call"].as_str()),
        (Some("socket"), Some("socket"))
    );
    assert!(
        row["desc"].as_str().unwrap().contains("unconnected"),
        "{row}"
    );
    for fd in &fds[2..] {
        let row = fd_row(&r, *fd).unwrap();
        assert_eq!(
            (row["kind"].as_str(), row["call"].as_str()),
            (Some("pipe"), Some("pipe"))
        );
    }
    assert_eq!(r["open"].as_u64().unwrap() as usize, kernel.len());
    s.resume();

    let (name, _) = s.next_checkpoint().expect("checkpoint");
    assert_eq!(name, "closed");
    let kernel = proc_fds(s.pid());
    let r = s.report_now();
    assert_matches_kernel(&r, &kernel, &[]);
    for fd in &fds {
        assert!(
            fd_row(&r, *fd).is_none(),
            "fd {fd} still reported after close"
        );
    }
    s.resume();
    assert!(s.finish().status.success());
}
