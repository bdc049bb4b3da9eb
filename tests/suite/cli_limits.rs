//! `fdguard limits PID`: a process's limit and where it was set, read from the chain of its
//! ancestors, against processes the test starts with limits of their own.
use crate::common::server::{proc_children, soft_limit};
use crate::common::*;

use std::process::Stdio;
use std::time::Duration;

/// A child of `tests/c/lowered_limit.c`, whose parent lowered its own limit to 100:200 before
/// forking it: the chain lists the child, then the parent, then the test, and the parent is
/// where the limit was set.
#[test]
fn the_parent_that_lowered_its_limit_is_the_origin() {
    let dir = scratch("limits-lowered");
    let prog = build_c("lowered_limit", &dir, &["-O1"]);
    let mut parent = Proc::spawn(command(&prog).stdin(Stdio::piped()).stdout(Stdio::piped()));
    let line = parent.first_line();
    let child: u32 = line.trim().strip_prefix("child ").unwrap().parse().unwrap();
    let out = succeeds(fdguard(&["limits", "--json", &child.to_string()]));
    let j: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(j["fdguard"], 1);
    assert_eq!(j["limit"]["soft"], 100, "{j}");
    assert_eq!(j["limit"]["hard"], 200, "{j}");
    let chain = j["chain"].as_array().unwrap();
    let link = |i: usize| (chain[i]["pid"].as_u64().unwrap() as u32, &chain[i]);
    assert_eq!(link(0).0, child, "the process first: {j}");
    assert_eq!(link(1).0, parent.id(), "then its parent: {j}");
    for i in [0, 1] {
        assert_eq!(
            (link(i).1["soft"].as_u64(), link(i).1["hard"].as_u64()),
            (Some(100), Some(200))
        );
        assert_eq!(link(i).1["comm"], "lowered_limit");
    }
    assert_eq!(link(2).0, std::process::id(), "then the test: {j}");
    assert_ne!(link(2).1["soft"], 100);
    assert_eq!(j["origin"]["pid"], parent.id(), "{j}");
    assert_eq!(j["origin"]["comm"], "lowered_limit");
    assert_eq!(j["origin"]["how"], "set");
    assert!(
        j["fix"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("now: prlimit --pid {child} --nofile=200:200")),
        "{j}"
    );

    let text = succeeds(fdguard(&["limits", &child.to_string()]));
    assert_set_in(&text, parent.id(), "lowered_limit");
}

/// The text names `pid` (`comm`) as where the limit was set, and marks its row, only its.
fn assert_set_in(text: &str, pid: u32, comm: &str) {
    assert!(
        text.contains(&format!("set in pid {pid} ({comm}): the nearest ancestor")),
        "{text}"
    );
    let marked: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with("<- set here"))
        .collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(
        marked[0]
            .trim_start()
            .starts_with(&format!("{pid}  {comm} ")),
        "{text}"
    );
}

#[test]
fn bad_input_is_one_line_and_status_2() {
    let err = fails_with(fdguard(&["limits", "999999999"]), 2);
    assert!(err.contains("no process with pid 999999999"), "{err}");
    let err = fails_with(fdguard(&["limits", "0"]), 2);
    assert!(err.contains("not a process id"), "{err}");
}

/// A Go program (tests/go/leak_three_ways leaking nothing, waiting on stdin) started with
/// 100:200: Go (1.19 and later) raises its soft limit to the hard one at start, so the program
/// itself is where its limit was set, and `limits` says why.
#[test]
fn a_go_program_that_raised_its_own_soft_limit_is_its_own_origin() {
    let dir = scratch("limits-go");
    let prog = build_go("leak_three_ways", &dir, false);
    let mut go = Proc::spawn(
        command(require("prlimit"))
            .arg("--nofile=100:200")
            .arg(&prog)
            .args(["127.0.0.1:1", "http://127.0.0.1:1/", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    assert_eq!(go.first_line(), "CHECKPOINT leaked\n");
    let pid = go.id().to_string();
    let j: Value = serde_json::from_str(&succeeds(fdguard(&["limits", "--json", &pid]))).unwrap();
    assert_eq!(j["limit"]["soft"], 200, "{j}");
    assert_eq!(j["limit"]["hard"], 200, "{j}");
    assert_eq!(j["runtime"], "go");
    assert_eq!(j["raises_soft"], true);
    assert_eq!(j["origin"]["pid"], go.id(), "{j}");
    assert_eq!(j["origin"]["how"], "set");
    assert_eq!(j["chain"][1]["pid"], std::process::id());
    let notes = j["notes"].to_string();
    assert!(notes.contains("Go 1.19 and later"), "{notes}");
}

/// supervisord running `tests/c/supervised.c`, started by the test from a configuration in its
/// own directory, and what `fdguard limits` says of the program.
struct Supervised {
    /// supervisord; the program ends with it (`supervised.c`).
    supervisord: Proc,
    program: u32,
    /// The configuration file, absolute.
    conf: String,
    json: Value,
    text: String,
}

/// The soft limit supervisord is started with (hard as the test's): below the `minfds` of
/// `start_supervised`'s callers, which it raises it to, unless said otherwise.
const STARTED_WITH: u64 = 1024;

/// Starts supervisord in the foreground (`nodaemon`) with `args` after its command (`run`:
/// `supervisord`, or its Python and script), in a directory of its own holding its
/// configuration, pidfile and logs (no control socket: a unix socket's path under a deep
/// target directory may pass the 108 bytes allowed), `minfds` in its `[supervisord]` section,
/// `included` in `conf.d/fds.conf`, which its `[include]` section names, and one program,
/// `supervised`. Waits for the program to run and asks `limits`.
fn start_supervised(
    run: &[String],
    args: &[&str],
    minfds: &str,
    env: &[(&str, &str)],
    included: Option<&str>,
) -> Supervised {
    let dir = scratch("limits-supervisord");
    let prog = build_c("supervised", &dir, &["-O1"]);
    let conf = dir.canonicalize().unwrap().join("supervisord.conf");
    std::fs::write(
        &conf,
        format!(
            "[supervisord]\nnodaemon=true\nlogfile=%(here)s/supervisord.log\n\
             pidfile=%(here)s/supervisord.pid\nchildlogdir=%(here)s\n\
             minfds = {minfds} ; more than it is started with\n\
             [include]\nfiles = conf.d/*.conf\n\
             [program:x]\ncommand={}\nstartsecs=0\nautorestart=false\n",
            prog.display()
        ),
    )
    .unwrap();
    if let Some(text) = included {
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(dir.join("conf.d/fds.conf"), text).unwrap();
    }
    let out = std::fs::File::create(dir.join("out")).unwrap();
    let mut cmd = command(&run[0]);
    cmd.args(&run[1..])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    soft_limit(&mut cmd, STARTED_WITH);
    let mut supervisord = Proc::spawn(&mut cmd);
    let mut program = None;
    wait_until(
        "supervisord to run its program",
        Duration::from_secs(10),
        || {
            if let Ok(Some(st)) = supervisord.try_wait() {
                let out = std::fs::read_to_string(dir.join("out")).unwrap_or_default();
                panic!("supervisord exited ({st}): {out}");
            }
            // Its fork is named as it until the program's exec.
            let comm =
                |p: &u32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            program = proc_children(supervisord.id())
                .into_iter()
                .find(|p| comm(p) == "supervised\n");
            program.is_some()
        },
    );
    let program = program.unwrap();
    let pid = program.to_string();
    let json = serde_json::from_str(&succeeds(fdguard(&["limits", "--json", &pid]))).unwrap();
    let text = succeeds(fdguard(&["limits", &pid]));
    check_against_kernel(&json);
    Supervised {
        supervisord,
        program,
        conf: conf.display().to_string(),
        json,
        text,
    }
}

/// `/proc/PID/limits`' "Max open files": soft and hard, null for unlimited as in the JSON.
fn kernel_limit(pid: u64) -> (Value, Value) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let value = |v: &str| v.parse::<u64>().map_or(Value::Null, Value::from);
    let fields: Vec<&str> = line.split_whitespace().collect();
    (value(fields[3]), value(fields[4]))
}

/// Every chain entry's limit is the kernel's, and the origin is the nearest entry whose limit
/// differs from its parent's by the kernel's figures (the top when none does).
fn check_against_kernel(j: &Value) {
    let chain = j["chain"].as_array().unwrap();
    let kernel: Vec<(Value, Value)> = chain
        .iter()
        .map(|link| kernel_limit(link["pid"].as_u64().unwrap()))
        .collect();
    for (link, (soft, hard)) in chain.iter().zip(&kernel) {
        assert_eq!(
            (&link["soft"], &link["hard"]),
            (soft, hard),
            "{link} vs the kernel: {j}"
        );
    }
    assert_eq!(j["limit"]["soft"], kernel[0].0);
    assert_eq!(j["limit"]["hard"], kernel[0].1);
    let at = kernel
        .windows(2)
        .position(|w| w[0] != w[1])
        .unwrap_or(kernel.len() - 1);
    assert_eq!(j["origin"]["pid"], chain[at]["pid"], "{j}");
    assert_eq!(
        j["origin"]["how"],
        if at + 1 < chain.len() { "set" } else { "top" }
    );
}

impl Drop for Supervised {
    /// Kills supervisord, and checks that its program went with it.
    fn drop(&mut self) {
        self.supervisord.kill_group();
        let running = || {
            std::fs::read_to_string(format!("/proc/{}/stat", self.program)).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, r)| !r.starts_with('Z'))
            })
        };
        if !std::thread::panicking() {
            wait_until(
                "supervisord's program to end with it",
                Duration::from_secs(5),
                || !running(),
            );
        }
    }
}

/// The test's own hard limit, none for unlimited.
fn own_hard_limit() -> Option<u64> {
    kernel_limit(u64::from(std::process::id())).1.as_u64()
}

/// supervisord (Debian's `supervisor`, its script run by its shebang's python3: comm
/// `supervisord`) with a relative `-c`: supervisord raised its soft limit to the file's
/// `minfds`, so it is where the program's limit was set, and `limits` names the file,
/// absolute, and its `minfds`.
#[test]
fn a_program_under_supervisord_gets_minfds_from_its_file() {
    const MINFDS: u64 = STARTED_WITH + 321;
    assert!(
        own_hard_limit().is_none_or(|h| h >= MINFDS),
        "the test's hard limit is below {MINFDS}"
    );
    let run = [require("supervisord").display().to_string()];
    let s = start_supervised(
        &run,
        &["-c", "supervisord.conf"],
        &MINFDS.to_string(),
        &[],
        None,
    );
    let (j, sup) = (&s.json, s.supervisord.id());
    assert_eq!(j["limit"]["soft"], MINFDS, "{j}");
    assert_eq!(j["chain"][0]["pid"], s.program, "the program first: {j}");
    assert_eq!(j["chain"][0]["comm"], "supervised");
    assert_eq!(j["chain"][1]["pid"], sup, "then supervisord: {j}");
    assert_eq!(j["chain"][1]["comm"], "supervisord");
    assert_eq!(
        j["chain"][2]["pid"],
        std::process::id(),
        "then the test: {j}"
    );
    assert_eq!(j["origin"]["pid"], sup, "{j}");
    assert_eq!(j["supervisord"]["pid"], sup);
    assert_eq!(j["supervisord"]["config"], s.conf.as_str());
    assert_eq!(j["supervisord"]["minfds"], MINFDS);
    assert_eq!(j["supervisord"]["minfds_from"], "config");
    let fix = j["fix"].as_array().unwrap();
    assert!(
        fix.iter().any(|f| f.as_str().unwrap().contains(&format!(
            "in the [supervisord] section of {}, then restart supervisord (pid {sup}",
            s.conf
        ))),
        "{j}"
    );

    let text = &s.text;
    assert_set_in(text, sup, "supervisord");
    assert!(
        text.contains(&format!(
            "supervisord: pid {sup}, minfds 1,345 (from {}); its soft limit is minfds",
            s.conf
        )),
        "{text}"
    );
}

/// The interpreter and script of supervisord (`python3 /usr/bin/supervisord`: comm `python3`).
fn python_supervisord() -> Vec<String> {
    let script = require("supervisord");
    let text = std::fs::read_to_string(&script).unwrap();
    let shebang = text.lines().next().and_then(|l| l.strip_prefix("#!"));
    let shebang = shebang.unwrap_or_else(|| panic!("{} is not a script", script.display()));
    let mut run: Vec<String> = shebang.split_whitespace().map(String::from).collect();
    run.push(script.display().to_string());
    run
}

/// supervisord run by Python itself (comm `python3`, an interpreter option before the script)
/// with `-a` on its command line, which wins over the `minfds` of its file and of the file it
/// includes.
#[test]
fn minfds_on_supervisords_command_line_wins_over_its_file() {
    const ON_THE_COMMAND_LINE: u64 = STARTED_WITH + 500;
    assert!(own_hard_limit().is_none_or(|h| h >= ON_THE_COMMAND_LINE));
    let mut run = python_supervisord();
    run.insert(1, "-u".into());
    let s = start_supervised(
        &run,
        &[
            "-na",
            &ON_THE_COMMAND_LINE.to_string(),
            "--configuration",
            "supervisord.conf",
        ],
        "1100",
        &[],
        Some("[supervisord]\nminfds = 1200\n"),
    );
    let (j, sup) = (&s.json, s.supervisord.id());
    assert_eq!(j["limit"]["soft"], ON_THE_COMMAND_LINE, "{j}");
    assert_eq!(j["chain"][1]["pid"], sup, "{j}");
    assert!(
        j["chain"][1]["comm"]
            .as_str()
            .unwrap()
            .starts_with("python"),
        "{j}"
    );
    assert_eq!(j["origin"]["pid"], sup, "{j}");
    assert_eq!(j["supervisord"]["minfds"], ON_THE_COMMAND_LINE, "{j}");
    assert_eq!(j["supervisord"]["minfds_from"], "command line");
    assert_eq!(j["supervisord"]["config"], s.conf.as_str());
    assert!(
        s.text.contains(&format!(
            "minfds 1,524 (from its command line, over {}'s); its soft limit is minfds",
            s.conf
        )),
        "{}",
        s.text
    );
    assert!(s.text.contains("fix next start: -a "), "{}", s.text);
}

/// `minfds` of a file the configuration includes (read after it: it wins), from supervisord's
/// environment (`%(ENV_NAME)s`), and below the soft limit supervisord was started with:
/// supervisord kept that one, and `limits` says so (with the file's 1100 it would have raised
/// it).
#[test]
fn a_limit_above_minfds_is_kept() {
    let run = [require("supervisord").display().to_string()];
    let s = start_supervised(
        &run,
        &["-c", "supervisord.conf"],
        "1100",
        &[("TEST_MINFDS", "900")],
        Some("[supervisord]\nminfds = %(ENV_TEST_MINFDS)s\n"),
    );
    let (j, sup) = (&s.json, s.supervisord.id());
    let included = s.conf.replace("supervisord.conf", "conf.d/fds.conf");
    assert_eq!(j["limit"]["soft"], STARTED_WITH, "{j}");
    assert_eq!(j["supervisord"]["minfds"], 900, "{j}");
    assert_eq!(j["supervisord"]["minfds_from"], "config");
    assert_eq!(j["supervisord"]["config"], s.conf.as_str());
    assert_eq!(j["supervisord"]["minfds_file"], included.as_str());
    assert!(
        s.text.contains(&format!(
            "supervisord: pid {sup}, minfds 900 (from {included}); its soft limit is above \
             minfds: it kept the limit it was started with"
        )),
        "{}",
        s.text
    );
    assert!(
        s.text.contains(&format!(
            "[supervisord] section of {included}, then restart"
        )),
        "{}",
        s.text
    );
}
