//! `fdguard report PID`, `fdguard diff` and `fdguard flamegraph`, on a real program that leaks
//! FILE streams in rounds under the library (`tests/c/holder.c`).
use crate::common::*;

use std::path::Path;
use std::process::{Command, Stdio};

fn report(pid: u32) -> Command {
    fdguard(&["report", &pid.to_string(), "--timeout", "20"])
}

/// The holder under fdguard, with `env` set; returns it stopped at its first checkpoint.
fn holder(dir: &Path, rounds: u32, env: &[(&str, &str)], stderr: Stdio) -> Stepper {
    let prog = build_c_once("holder", &["-O1", "-g"]);
    let mut cmd = command(prog);
    cmd.arg(dir)
        .arg(rounds.to_string())
        .env("LD_PRELOAD", lib_path())
        .envs(env.iter().copied())
        .stderr(stderr);
    let mut s = Stepper::spawn(cmd, &dir.join("unused"));
    assert_eq!(s.next_checkpoint().unwrap().0, "held");
    s
}

#[test]
fn report_diff_and_flamegraph_follow_a_leak() {
    let dir = scratch("cli-report");
    let template = format!("{}/r.%p.%t.json", dir.display());
    let env = [
        ("FDGUARD_REPORT", template.as_str()),
        ("FDGUARD_FORMAT", "json"),
    ];
    let mut s = holder(&dir, 2, &env, Stdio::inherit());
    let pid = s.pid();

    let first = succeeds(report(pid));
    assert_eq!(first.lines().count(), 1, "one report: {first}");
    let r: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        (r["reason"].as_str(), r["pid"].as_u64()),
        (Some("signal"), Some(pid.into()))
    );
    assert_matches_kernel(&r, &proc_fds(pid), &[]);

    let mut rounds = Vec::new();
    for round in 1..=2 {
        s.resume();
        assert_eq!(s.next_checkpoint().unwrap().0, "leaked");
        let text = succeeds(report(pid));
        let r: Value = serde_json::from_str(&text).unwrap();
        assert_matches_kernel(&r, &proc_fds(pid), &[]);
        let path = dir.join(format!("round{round}.json"));
        std::fs::write(&path, text).unwrap();
        rounds.push(path);
    }
    s.resume();
    assert!(s.finish().status.success());
    let (a, b) = (rounds[0].to_str().unwrap(), rounds[1].to_str().unwrap());

    // diff: the leaking stack first, grown by one round.
    let d: Value = serde_json::from_str(&succeeds(fdguard(&["diff", "--json", a, b]))).unwrap();
    assert_eq!(d["open"]["delta"], 25);
    assert_eq!(d["by_kind"]["file"]["delta"], 25);
    let top = &d["stacks"][0];
    assert_eq!(
        (
            top["status"].as_str(),
            top["old"].as_u64(),
            top["new"].as_u64()
        ),
        (Some("grew"), Some(25), Some(50))
    );
    assert_eq!(functions(top), ["leak_streams", "main"]);
    assert!(
        d["stacks"].as_array().unwrap()[1..]
            .iter()
            .all(|s| s["delta"] == 0),
        "only the leak grew: {d}"
    );
    let text = succeeds(fdguard(&["diff", a, b]));
    let first_line = text.lines().next().unwrap();
    assert!(
        first_line.contains("fds open (+25)") && first_line.contains(&format!("pid {pid}")),
        "{first_line}"
    );
    assert!(
        text.contains("\n+25 fds (25 -> 50): files; created at:\n   #0  leak_streams ")
            && text.contains("/tests/c/holder.c:")
            && text.contains(" (holder+0x"),
        "{text}"
    );

    // flamegraph: the leak is the widest tower, outermost frame first.
    let folded = succeeds(fdguard(&["flamegraph", "--folded", b]));
    assert!(
        folded.lines().any(|l| l == "main;leak_streams 50"),
        "{folded}"
    );
    let svg = succeeds(fdguard(&["flamegraph", b]));
    let xml = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&svg, xml).expect("the SVG is XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    for name in ["leak_streams", "main"] {
        assert!(texts.iter().any(|t| t.contains(name)), "{name} in the SVG");
    }
    let title = format!("fds held by pid {pid}");
    assert!(
        texts.iter().any(|t| t.contains(&title)),
        "{title} in the SVG"
    );
}

/// The reply files of `pid`'s requests left in /tmp (none once `report` returns).
fn replies_left(pid: u32) -> Vec<String> {
    let prefix = format!("fdguard-reply.{pid}.");
    std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// `report` gets a report in the format it asks for, into a reply file of its own, wherever the
/// process writes its reports (a text file, a stderr file, a pipe); `--file` reads where it
/// writes them instead.
#[test]
fn report_gets_the_format_it_asks_for_wherever_reports_go() {
    let dir = scratch("cli-report-text");
    let path = format!("{}/t.%p.txt", dir.display());
    let s = holder(
        &dir,
        0,
        &[("FDGUARD_REPORT", path.as_str())],
        Stdio::inherit(),
    );
    let pid = s.pid();
    let text = succeeds(report(pid));
    let lines: Vec<&str> = text.lines().collect();
    // Every line the report's, blank ones included (`==PID==`).
    let prefix = format!("=={pid}==");
    assert!(lines.iter().all(|l| l.starts_with(&prefix)), "{text}");
    assert!(lines.contains(&prefix.as_str()), "{text}");
    assert!(lines[0].contains("fds open"), "{text}");
    assert_eq!(
        *lines.last().unwrap(),
        format!("{prefix} fdguard: end of report")
    );
    let json = succeeds(fdguard(&["report", &pid.to_string(), "--json"]));
    let r: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["reason"], "signal");
    assert_matches_kernel(&r, &proc_fds(pid), &[]);
    // Both went to reply files: the process's own report file is not even there yet.
    let file = dir.join(format!("t.{pid}.txt"));
    assert!(!file.exists(), "no report of its own was made");
    assert!(replies_left(pid).is_empty(), "{:?}", replies_left(pid));
    // --file reads where it writes: the request's report goes there, in the format asked for.
    let from_file = succeeds(fdguard(&[
        "report",
        &pid.to_string(),
        "--file",
        file.to_str().unwrap(),
    ]));
    assert!(
        from_file.ends_with("fdguard: end of report\n"),
        "{from_file}"
    );
    let err = fails_with(
        fdguard(&["diff", file.to_str().unwrap(), file.to_str().unwrap()]),
        2,
    );
    assert!(err.contains("is a text report"), "{err}");
    s.finish();

    // Reports to stderr, a file or a pipe: either way the reply file has the report.
    let log = dir.join("stderr.log");
    for stderr in [
        Stdio::from(std::fs::File::create(&log).unwrap()),
        Stdio::piped(),
    ] {
        let s = holder(&dir, 0, &[], stderr);
        let text = succeeds(report(s.pid()));
        assert!(text.ends_with("fdguard: end of report\n"), "{text}");
        assert!(replies_left(s.pid()).is_empty());
        s.finish();
    }
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "",
        "nothing on its stderr"
    );
}

#[test]
fn report_refuses_a_process_without_fdguard_and_bad_files() {
    let dir = scratch("cli-report-refusals");
    let prog = build_c_once("holder", &["-O1", "-g"]);
    let mut cmd = plain(&prog);
    cmd.arg(&dir).arg("0");
    let mut s = Stepper::spawn(cmd, &dir.join("unused"));
    assert_eq!(s.next_checkpoint().unwrap().0, "held");
    let err = fails_with(report(s.pid()), 2);
    assert!(
        err.contains("is not running under fdguard") && err.contains("`fdguard inspect"),
        "{err}"
    );
    s.finish();

    let s = holder(&dir, 0, &[("FDGUARD_SIGNAL", "none")], Stdio::inherit());
    let err = fails_with(report(s.pid()), 2);
    assert!(err.contains("FDGUARD_SIGNAL=none"), "{err}");
    s.finish();

    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = write(
        "good.json",
        "{\"fdguard\":1,\"pid\":1,\"open\":0,\"fds\":[],\"stacks\":[]}\n",
    );
    for (name, text, says) in [
        ("garbage.json", "not json at all\n", "is not fdguard's JSON"),
        ("other.json", "{\"hello\":1}\n", "has no \"fdguard\" key"),
        (
            "future.json",
            "{\"fdguard\":2,\"pid\":1}\n",
            "schema 2 is not one this fdguard reads",
        ),
        ("empty.json", "", "holds no fdguard report"),
    ] {
        let bad = write(name, text);
        let err = fails_with(fdguard(&["diff", &good, &bad]), 2);
        assert!(err.contains(says), "{name}: {err}");
        let err = fails_with(fdguard(&["flamegraph", &bad]), 2);
        assert!(err.contains(says), "{name}: {err}");
    }
    let err = fails_with(fdguard(&["diff", &good, "/nonexistent/r.json"]), 2);
    assert!(err.contains("cannot read /nonexistent/r.json"), "{err}");
}
