//! HotSpot's own frames in creation stacks (issue 25): `tests/java/LeakSites.java`, seed 002 in
//! Java (batch files leaked by `readBatch`, the sockets of failed deliveries by `ship`; each
//! site's first leak made in the interpreter, the others after C2 compiled it), under a plain
//! `fdguard run` on every JDK installed, and after `fdguard attach` to a JVM started without
//! fdguard: at least 90% of the leaked fds' stacks name the leaking method and its line, the
//! two sites are two groups, the JVM answers `fdguard report` (on fdguard's own signal:
//! SIGUSR2 is HotSpot's) and exits normally, and the report is `/proc/PID/fd` exactly.
use crate::common::*;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::jvm_attach::{assert_no_crash, jdks};

/// Leaks per site.
const LEAKS: usize = 100;

fn source(class: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/java/{class}.java"))
}

/// The directory holding the test programs' classes, compiled once (for Java 11: every JDK
/// runs them).
fn classes() -> PathBuf {
    use std::sync::OnceLock;
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES
        .get_or_init(|| {
            let dir = scratch("runtime-java-classes");
            let mut javac = command(require("javac"));
            javac.args(["--release", "11", "-d"]).arg(&dir);
            javac.arg(source("LeakSites")).arg(source("SignalOpen"));
            succeeds(javac);
            dir
        })
        .clone()
}

/// The line `LeakSites.java` marks `// LEAK name`.
fn marked_line(name: &str) -> u64 {
    let text = std::fs::read_to_string(source("LeakSites")).unwrap();
    let marker = format!("// LEAK {name}");
    let at = text.lines().position(|l| l.ends_with(&marker));
    at.unwrap_or_else(|| panic!("no {marker:?} in LeakSites.java")) as u64 + 1
}

/// Starts the Java program `args` (a class and its arguments) in `dir`, its stderr in
/// `stderr.log` there; `launch` is how (`fdguard run -- java`, or `java`, and JVM options).
fn spawn(dir: &Path, launch: &[PathBuf], args: &[&OsStr]) -> Stepper {
    let (program, options) = launch.split_first().unwrap();
    let mut cmd = command(program);
    cmd.args(options)
        .arg("-cp")
        .arg(classes())
        .args(args)
        .current_dir(dir);
    stderr_to(&mut cmd, &dir.join("stderr.log"));
    Stepper::spawn(cmd, &dir.join("no-reports"))
}

/// `LeakSites` in a fresh directory, stopped at its first checkpoint, with the JIT's
/// compilations printed on stderr (see `assert_compiled_before_warm`).
fn start(name: &str, mut launch: Vec<PathBuf>) -> (Stepper, PathBuf) {
    let dir = scratch(name);
    let batch = dir.join("batch.log");
    std::fs::write(&batch, "a log line\n").unwrap();
    launch.extend(["-XX:+PrintCompilation", "-XX:+DisplayVMOutputToStderr"].map(PathBuf::from));
    let leaks = LEAKS.to_string();
    let args = ["LeakSites".as_ref(), batch.as_os_str(), leaks.as_ref()];
    let mut s = spawn(&dir, &launch, &args);
    let (at, _) = s.next_checkpoint().expect("LeakSites starts");
    assert_eq!(at, "start");
    (s, dir)
}

/// `fdguard report PID --json`.
fn report(pid: u32) -> Value {
    serde_json::from_str(&succeeds(fdguard(&["report", &pid.to_string(), "--json"]))).unwrap()
}

/// Lets it leak.
fn leak(s: &mut Stepper) {
    s.resume();
    let (at, lines) = s.next_checkpoint().expect("LeakSites leaks");
    assert_eq!(at, "leaked", "{lines:?}");
}

/// Asserts that C2 (tier 4) compiled both leaking methods before the program said `warm`,
/// after which it made all its leaks but the first ones: in its stderr, in `dir`.
fn assert_compiled_before_warm(dir: &Path) {
    let said = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    let lines: Vec<&str> = said.lines().collect();
    let warm = lines.iter().position(|l| *l == "warm").expect("warm");
    for method in ["LeakSites::readBatch", "LeakSites::ship"] {
        let c2 = lines[..warm].iter().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words
                .iter()
                .position(|w| *w == method)
                .is_some_and(|i| i > 0 && words[i - 1] == "4")
        });
        assert!(c2, "C2 did not compile {method} before the leaks: {said}");
    }
}

/// The rows of the fds one site leaked: the batch files, or the sockets.
fn leaked_rows<'a>(r: &'a Value, site: &str, batch: &Path) -> Vec<&'a Value> {
    let batch = batch.to_str().unwrap();
    let rows = r["fds"].as_array().unwrap().iter();
    rows.filter(|row| match site {
        "readBatch" => row["desc"] == batch,
        _ => row["kind"] == "socket" && row["call"] == "socket",
    })
    .collect()
}

/// Whether a stack has the Java frame `LeakSites.site` at `line`.
fn names_site(stack: &Value, site: &str, line: u64) -> bool {
    let function = format!("LeakSites.{site}");
    stack["frames"].as_array().unwrap().iter().any(|f| {
        f["module"] == "java"
            && f["function"] == function.as_str()
            && f["file"] == "LeakSites.java"
            && f["line"].as_u64() == Some(line)
    })
}

/// `fdguard report PID --json`, checked against `/proc/PID/fd` (the program is stopped), and
/// the assertions on both leak sites.
fn assert_leaks_named(s: &Stepper, dir: &Path, what: &str) {
    let kernel = proc_fds(s.pid());
    let r = report(s.pid());
    assert_exact(&r, &kernel);
    assert_eq!(r["runtime"]["name"], "jvm", "{what}: {}", r["runtime"]);
    assert_eq!(r["runtime"]["frames"], true, "{what}: {}", r["runtime"]);
    let mut groups = BTreeSet::new();
    for site in ["readBatch", "ship"] {
        let line = marked_line(site);
        let rows = leaked_rows(&r, site, &dir.join("batch.log"));
        let stacks: Vec<Value> = rows
            .iter()
            .map(|row| stack_by_id(&r, &row["stack"]))
            .collect();
        assert_eq!(stacks.len(), LEAKS, "{what}: {site}: {rows:?}");
        let named = stacks.iter().filter(|s| names_site(s, site, line)).count();
        assert!(
            named * 10 >= LEAKS * 9,
            "{what}: {named} of {LEAKS} fds of {site} name it at line {line}: {}",
            stacks[0]
        );
        let ids: BTreeSet<String> = stacks.iter().map(|s| s["id"].to_string()).collect();
        assert_eq!(ids.len(), 1, "{what}: {site}'s fds in stacks {ids:?}");
        groups.extend(ids);
    }
    assert_eq!(groups.len(), 2, "{what}: the two sites in {groups:?}");
}

/// Lets it end; it must exit normally, having held every leak, without a crash report.
fn finish(mut s: Stepper, dir: &Path, bye: &str, what: &str) {
    s.resume();
    let out = s.finish();
    assert!(out.status.success(), "{what}: {:?}", out.status);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(bye), "{what}: {said}");
    assert_no_crash(dir);
}

/// Asserts that the JVM's own opening of its class image (`lib/modules`, at start, from
/// `libjvm.so`, no Java frame yet) has native frames, those of `libjvm.so` named from its symbol
/// table (a library loaded after fdguard started).
fn assert_libjvm_named(r: &Value, what: &str) {
    let row = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| {
            row["desc"]
                .as_str()
                .is_some_and(|d| d.ends_with("/lib/modules"))
        })
        .unwrap_or_else(|| panic!("{what}: no lib/modules in {r}"));
    let stack = stack_by_id(r, &row["stack"]);
    let named = stack["frames"].as_array().unwrap().iter().any(|f| {
        f["module"]
            .as_str()
            .is_some_and(|m| m.ends_with("/libjvm.so"))
            && f["function"].is_string()
    });
    assert!(named, "{what}: no libjvm.so frame named: {stack}");
}

/// Under a plain `fdguard run`, which gives the JVM fdguard's agent and says so, on every JDK.
#[test]
fn java_methods_and_lines_name_the_leaks_under_fdguard_run() {
    for java in jdks() {
        let what = java.display().to_string();
        let launch = vec![cli_path(), "run".into(), "--".into(), java.clone()];
        let (mut s, dir) = start("runtime-java-run", launch);
        leak(&mut s);
        assert_compiled_before_warm(&dir);
        assert_leaks_named(&s, &dir, &what);
        assert_libjvm_named(&report(s.pid()), &what);
        finish(s, &dir, &format!("bye {}", 2 * LEAKS), &what);
        let stderr = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
        assert!(
            stderr.contains("is a JVM: JAVA_TOOL_OPTIONS gets -agentpath:")
                && stderr.contains("Picked up JAVA_TOOL_OPTIONS"),
            "{what}: {stderr}"
        );
        assert!(
            stderr.contains("installed its own handler for SIGUSR2"),
            "{what}: report requests moved off HotSpot's signal: {stderr}"
        );
    }
}

/// After `fdguard attach` to a JVM started without fdguard (its classes loaded before, the
/// leaking methods first called after).
#[test]
fn java_methods_and_lines_name_the_leaks_after_fdguard_attach() {
    let (mut s, dir) = start("runtime-java-attach", vec![require("java")]);
    // A generous timeout: on a busy machine a JVM takes its time to start its listener.
    let said = succeeds(fdguard(&[
        "attach",
        &s.pid().to_string(),
        "--timeout",
        "60",
    ]));
    assert!(said.contains("attached"), "{said}");
    leak(&mut s);
    assert_compiled_before_warm(&dir);
    assert_leaks_named(&s, &dir, "attached");
    finish(s, &dir, &format!("bye {}", 2 * LEAKS), "attached");
}

/// A JNI method opens a file inside a signal handler (which may have interrupted `malloc`):
/// its Java frames are walked (the walk is made for that) but never named there, so they are
/// left out of its stack, while a direct open of the same program names its Java method.
#[test]
fn java_frames_are_never_named_inside_a_signal_handler() {
    let java = require("java").canonicalize().unwrap();
    let include = java.parent().unwrap().parent().unwrap().join("include");
    let dir = scratch("runtime-java-signal");
    let flags = [include.clone(), include.join("linux")].map(|d| format!("-I{}", d.display()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let lib = build_c_shared("jni_signal_open", "libsignalopen.so", &dir, &flags);
    let (in_handler, direct) = (dir.join("in-handler"), dir.join("direct"));
    for f in [&in_handler, &direct] {
        std::fs::write(f, "").unwrap();
    }
    let launch = [cli_path(), "run".into(), "--".into(), java];
    let args = [
        "SignalOpen".as_ref(),
        lib.as_os_str(),
        in_handler.as_os_str(),
        direct.as_os_str(),
    ];
    let mut s = spawn(&dir, &launch, &args);
    let (at, said) = s.next_checkpoint().expect("SignalOpen opens");
    assert_eq!(at, "opened", "{said:?}");
    let r = report(s.pid());
    let stack_of = |path: &Path| {
        let rows = r["fds"].as_array().unwrap().iter();
        let row = rows
            .filter(|row| row["desc"] == path.to_str().unwrap())
            .collect::<Vec<_>>();
        assert_eq!(row.len(), 1, "{said:?}: {path:?} in {r}");
        assert_eq!(row[0]["call"], "open", "{}", row[0]);
        stack_by_id(&r, &row[0]["stack"])
    };
    let handled = stack_of(&in_handler);
    let java_frames = handled["frames"].as_array().unwrap().iter();
    assert!(
        java_frames.filter(|f| f["module"] == "java").count() == 0,
        "named inside a handler: {handled}"
    );
    let directly = stack_of(&direct);
    assert!(
        functions(&directly).contains(&"SignalOpen.directly".to_string()),
        "{directly}"
    );
    finish(s, &dir, "bye", "signal");
}
