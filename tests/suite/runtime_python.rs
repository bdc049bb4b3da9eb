//! CPython's own frames in creation stacks, under a plain `fdguard run` (issue 25): a program
//! leaking files and failed-connect sockets from two functions (`tests/py/leak_sites.py`; one
//! called from a generator, the other from a method in a second thread) run by pyenv's python3
//! (3.11), Debian's `/usr/bin/python3` (3.11, stripped), and pyenv's 3.12 and 3.13: the leaked
//! fds' stacks name the leaking function and the line the script marks, the two leak sites are
//! two groups, and the report is `/proc/PID/fd` exactly; the same with the files opened with the
//! GIL held (the frames then read the careful way, a generator's through the kernel), and in an
//! exit report (after the interpreter freed its code objects). Names beyond ASCII; daemon
//! threads making fds while the interpreter finalizes. A version fdguard cannot read (3.10) is
//! named in the report's header, with native frames only.
use crate::common::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Leaks per site.
const LEAKS: usize = 100;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/leak_sites.py")
}

/// The line the script marks `# LEAK name`.
fn marked_line(name: &str) -> u64 {
    let text = std::fs::read_to_string(script()).unwrap();
    let marker = format!("# LEAK {name}");
    text.lines()
        .position(|l| l.ends_with(&marker))
        .unwrap_or_else(|| panic!("no {marker:?} in the script")) as u64
        + 1
}

/// pyenv's CPython `3.MINOR` (the newest installed), where pyenv keeps its versions.
fn pyenv_python(minor: u32) -> PathBuf {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))
        .unwrap_or_default()
        .join("versions");
    let prefix = format!("3.{minor}.");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join(format!("bin/python3.{minor}")))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "pyenv's CPython 3.{minor} is not installed in {}: this test needs it \
             (scripts/test.sh installs it with pyenv)",
            root.display()
        )
    })
}

/// Debian's python3.
fn debian_python() -> PathBuf {
    let p = PathBuf::from("/usr/bin/python3");
    assert!(
        p.is_file(),
        "/usr/bin/python3 is not installed: this test needs Debian's python3 \
         (scripts/test.sh installs it)"
    );
    p
}

/// What `python -V` says, `Python 3.11.7` → `3.11.7`.
fn version_of(python: &Path) -> String {
    let out = succeeds({
        let mut c = command(python);
        c.arg("-c")
            .arg("import platform; print(platform.python_version())");
        c
    });
    out.trim().to_string()
}

/// Runs the script under `fdguard run --json`, stopped with everything leaked: the report
/// taken there, checked against `/proc/PID/fd`.
fn leaked_report(python: &Path, tag: &str, env: &[(&str, &str)]) -> Value {
    let dir = scratch(tag);
    let report = dir.join("report.json");
    let mut cmd = fdguard(&["run", "--json", "--report"]);
    cmd.envs(env.iter().copied())
        .arg(&report)
        .arg("--")
        .arg(python)
        .arg(script())
        .arg(LEAKS.to_string());
    let mut s = Stepper::spawn(cmd, &report);
    let (name, _) = s
        .next_checkpoint()
        .expect("the script reaches its checkpoint");
    assert_eq!(name, "leaked");
    let kernel = proc_fds(s.pid());
    let r = s.report_now();
    assert_exact(&r, &kernel);
    s.resume();
    assert!(s.finish().status.success());
    r
}

/// The rows of the fds leaked by one site: the files of /etc/hostname, or the TCP sockets.
fn leaked_rows<'a>(r: &'a Value, site: &str) -> Vec<&'a Value> {
    r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| match site {
            "read_setting" => row["kind"] == "file" && row["desc"] == "/etc/hostname",
            _ => row["kind"] == "socket" && row["call"] == "socket",
        })
        .collect()
}

/// Whether a stack has a Python frame of `function` at `line`.
fn names(stack: &Value, function: &str, line: u64) -> bool {
    stack["frames"].as_array().unwrap().iter().any(|f| {
        f["module"] == "python" && f["function"] == function && f["line"].as_u64() == Some(line)
    })
}

fn assert_leaks_named(python: &Path, tag: &str, env: &[(&str, &str)]) {
    let r = leaked_report(python, tag, env);
    assert_sites_named(&r, python);
}

/// Each site's leaked fds: every one there, at least 90% of their stacks naming the site's
/// function and line, one group each.
fn assert_sites_named(r: &Value, python: &Path) {
    let version = version_of(python);
    assert_eq!(
        r["runtime"],
        serde_json::json!({"name": "python", "version": version, "frames": true, "why": null}),
        "{python:?}"
    );
    let mut groups = BTreeSet::new();
    for site in ["read_setting", "dial"] {
        let line = marked_line(site);
        let rows = leaked_rows(r, site);
        assert_eq!(rows.len(), LEAKS, "{site}: {rows:?}");
        let named = rows
            .iter()
            .filter(|row| names(&stack_by_id(r, &row["stack"]), site, line))
            .count();
        let first = stack_by_id(r, &rows[0]["stack"]);
        assert!(
            named * 10 >= rows.len() * 9,
            "{python:?}: {named} of {} {site} fds name {site} at line {line}: {first}",
            rows.len()
        );
        let ids: BTreeSet<String> = rows.iter().map(|row| row["stack"].to_string()).collect();
        assert_eq!(ids.len(), 1, "{python:?}: {site} in {ids:?}");
        groups.extend(ids);
    }
    assert_eq!(
        groups.len(),
        2,
        "{python:?}: two leak sites, groups {groups:?}"
    );
}

#[test]
fn pyenv_python3_names_the_leaking_lines() {
    let python = require("python3");
    assert_leaks_named(&python, "py-pyenv", &[]);
}

/// `ctypes.PyDLL` calls libc's `open` with the GIL held: the frames are read the careful way
/// (the generator's frame, in its object, through the kernel), and named the same.
#[test]
fn frames_are_named_when_open_is_called_with_the_gil_held() {
    let python = require("python3");
    assert_leaks_named(&python, "py-gil", &[("LEAK_MODE", "gil")]);
}

#[test]
fn debian_python3_names_the_leaking_lines() {
    assert_leaks_named(&debian_python(), "py-debian", &[]);
}

#[test]
fn python_3_12_names_the_leaking_lines() {
    assert_leaks_named(&pyenv_python(12), "py312", &[]);
}

#[test]
fn python_3_13_names_the_leaking_lines() {
    assert_leaks_named(&pyenv_python(13), "py313", &[]);
}

/// An exit report comes after the interpreter finalized, its code objects freed: the names
/// were taken when each stack was first seen.
#[test]
fn exit_reports_name_the_leaking_lines() {
    let python = require("python3");
    let dir = scratch("py-exit");
    let report = dir.join("exit.json");
    let mut cmd = fdguard(&["run", "--at-exit", "--json", "--report"]);
    cmd.env("LEAK_MODE", "exit")
        .arg(&report)
        .arg("--")
        .arg(&python)
        .arg(script())
        .arg(LEAKS.to_string());
    succeeds(cmd);
    // pyenv's `python3` is a shell script, whose helper processes leave exit reports too.
    let reports = read_reports(&report);
    let r = reports
        .iter()
        .find(|r| r["runtime"]["name"] == "python")
        .unwrap_or_else(|| panic!("no exit report of python: {reports:?}"));
    assert_eq!(r["reason"], "exit");
    assert_sites_named(r, &python);
}

/// Names and file names beyond ASCII, in each of CPython's string widths (1, 2 and 4 bytes a
/// character), named in the hook and (with the GIL held) in the report child.
#[test]
fn names_beyond_ascii_are_named() {
    const SCRIPT: &str = "\
import ctypes, os, signal, sys, time
libc = ctypes.PyDLL(None)
held = []
def lire_réglage():
    held.append(open('/etc/hostname'))
def 読む():
    held.append(libc.open(b'/etc/hostname', 0))
def 𐐀𐐁():
    held.append(open('/etc/hosts'))
lire_réglage(); 読む(); 𐐀𐐁()
print('CHECKPOINT named', flush=True)
sys.stdin.readline()
";
    let dir = scratch("py-names").join("répertoire");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("noms.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let report = dir.join("report.json");
    let mut cmd = guarded(&require("python3"), &report);
    cmd.arg(&script);
    let mut s = Stepper::spawn(cmd, &report);
    s.next_checkpoint().expect("checkpoint");
    let r = s.report_now();
    s.resume();
    assert!(s.finish().status.success());
    let file = script.display().to_string();
    for (function, line) in [("lire_réglage", 5), ("読む", 7), ("𐐀𐐁", 9)] {
        let named = r["stacks"].as_array().unwrap().iter().any(|stack| {
            stack["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["function"] == function && f["file"] == *file && f["line"] == line)
        });
        assert!(named, "{function} at {file}:{line}: {r}");
    }
}

/// Daemon threads making fds while the interpreter finalizes (which frees their thread states
/// and frames under them): frames are not read then, and the program exits as without fdguard.
#[test]
fn daemon_threads_making_fds_through_finalization_exit_cleanly() {
    const CHURN: &str = "\
import os, threading, time
def churn():
    while True:
        os.close(os.open('/dev/null', os.O_RDONLY))
        open('/dev/null').close()
for _ in range(4):
    threading.Thread(target=churn, daemon=True).start()
time.sleep(0.02)
";
    for python in [require("python3"), pyenv_python(13)] {
        for _ in 0..10 {
            let out = command(&python)
                .arg("-c")
                .arg(CHURN)
                .env("LD_PRELOAD", lib_path())
                .output()
                .unwrap();
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "{python:?}: {:?} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// 3.10 keeps its frames as objects fdguard does not read: the header says so, and the stacks
/// are native frames, none of them Python's.
#[test]
fn python_3_10_is_named_with_native_frames_only() {
    let python = pyenv_python(10);
    let r = leaked_report(&python, "py310", &[]);
    assert_eq!(r["runtime"]["name"], "python");
    assert_eq!(r["runtime"]["version"], version_of(&python));
    assert_eq!(r["runtime"]["frames"], false);
    let why = r["runtime"]["why"].as_str().unwrap();
    assert!(why.contains("3.11"), "{why}");
    for stack in r["stacks"].as_array().unwrap() {
        let frames = stack["frames"].as_array().unwrap();
        assert!(!frames.is_empty(), "{stack}");
        assert!(frames.iter().all(|f| f["module"] != "python"), "{stack}");
    }
}
