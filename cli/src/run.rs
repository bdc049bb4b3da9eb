//! `fdguard run [options] -- CMD ARGS...`: starts a program under `libfdguard.so`, the options
//! becoming `FDGUARD_*` variables. The program replaces this command (same pid, same signals).
//! A program the library cannot see into (statically linked, or Go) runs under this command's
//! tracer instead (`trace`), with the same options.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::fail::{Failure, Outcome};
use crate::trace;
use fdguard_core::config::Config;
use fdguard_core::program::{Program, Runtime};
use fdguard_core::signals::parse_signal;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EmfileMode {
    Pause,
    Sleep,
    Shed,
    Off,
}

/// The library's options, each one an `FDGUARD_*` variable (see the README's table).
#[derive(Args, Debug, Default)]
pub struct GuardOptions {
    /// Report the fds still open at normal exit, like valgrind --track-fds (FDGUARD_AT_EXIT=1)
    #[arg(long)]
    pub at_exit: bool,
    /// Exit with status N when fds leaked at exit (FDGUARD_LEAK_EXITCODE)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=255))]
    pub leak_exitcode: Option<u8>,
    /// Write reports as JSON, one object per line (FDGUARD_FORMAT=json)
    #[arg(long)]
    pub json: bool,
    /// Where reports go: a file (%p = pid, %t = start time) or stderr (FDGUARD_REPORT)
    #[arg(long, value_name = "PATH")]
    pub report: Option<String>,
    /// Report when open fds reach this percentage of the soft limit; 0 = never (FDGUARD_THRESHOLD)
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub threshold: Option<u8>,
    /// What the accept guard does when accept fails for lack of fds (FDGUARD_EMFILE)
    #[arg(long, value_enum, value_name = "MODE")]
    pub emfile: Option<EmfileMode>,
    /// Frames captured per creation stack, 0 to 64; 0 = no stacks (FDGUARD_DEPTH)
    #[arg(long, value_name = "FRAMES", value_parser = clap::value_parser!(u8).range(0..=64))]
    pub depth: Option<u8>,
    /// The signal that asks for a report: USR2, RTMIN+5, none, ... (FDGUARD_SIGNAL)
    #[arg(long, value_name = "SIGNAL", value_parser = signal_arg)]
    pub signal: Option<String>,
    /// Comma-separated globs left out of exit reports (FDGUARD_IGNORE)
    #[arg(long, value_name = "PATTERNS")]
    pub ignore: Option<String>,
    /// Also capture a stack at every close, shown for double closes (FDGUARD_CLOSE_STACKS=1)
    #[arg(long)]
    pub close_stacks: bool,
    /// The accept guard's longest backoff, 5 to 60000 ms (FDGUARD_BACKOFF_MAX_MS)
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u16).range(5..=60000))]
    pub backoff_max_ms: Option<u16>,
    /// Seconds between two emfile reports, 0 to 86400 (FDGUARD_EMFILE_INTERVAL)
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(0..=86400))]
    pub emfile_interval: Option<u32>,
    /// Raise the soft fd limit to the hard one at start (FDGUARD_RAISE_NOFILE=1)
    #[arg(long)]
    pub raise_nofile: bool,
    /// A traced Go program: ancestor goroutines a creation stack continues through, 0 to 32;
    /// 0 = none (FDGUARD_GO_ANCESTORS)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=32))]
    pub go_ancestors: Option<u8>,
}

fn signal_arg(s: &str) -> Result<String, String> {
    match parse_signal(s.trim()) {
        Some(_) => Ok(s.trim().to_string()),
        None => Err("expected none, USR1, USR2, HUP, TERM, WINCH, RTMIN+N or such".to_string()),
    }
}

impl GuardOptions {
    /// The configuration these options make, over the `FDGUARD_*` variables of the
    /// environment; with the parser's warnings.
    pub fn config(&self) -> (Config, Vec<String>) {
        let ours = self.variables();
        Config::from_lookup(|name| match ours.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => Some(v.clone().into_bytes()),
            None => std::env::var_os(name).map(|v| v.into_encoded_bytes()),
        })
    }

    /// The `FDGUARD_*` variables these options stand for (options not given: none).
    pub fn variables(&self) -> Vec<(&'static str, String)> {
        let flag = |on: bool, name| on.then(|| (name, "1".to_string()));
        let value = |v: Option<String>, name| v.map(|v| (name, v));
        [
            flag(self.at_exit, "FDGUARD_AT_EXIT"),
            value(
                self.leak_exitcode.map(|n| n.to_string()),
                "FDGUARD_LEAK_EXITCODE",
            ),
            self.json.then(|| ("FDGUARD_FORMAT", "json".to_string())),
            value(self.report.clone(), "FDGUARD_REPORT"),
            value(self.threshold.map(|n| n.to_string()), "FDGUARD_THRESHOLD"),
            value(
                self.emfile.map(|m| {
                    m.to_possible_value()
                        .expect("no skipped variants")
                        .get_name()
                        .to_string()
                }),
                "FDGUARD_EMFILE",
            ),
            value(self.depth.map(|n| n.to_string()), "FDGUARD_DEPTH"),
            value(self.signal.clone(), "FDGUARD_SIGNAL"),
            value(self.ignore.clone(), "FDGUARD_IGNORE"),
            flag(self.close_stacks, "FDGUARD_CLOSE_STACKS"),
            value(
                self.backoff_max_ms.map(|n| n.to_string()),
                "FDGUARD_BACKOFF_MAX_MS",
            ),
            value(
                self.emfile_interval.map(|n| n.to_string()),
                "FDGUARD_EMFILE_INTERVAL",
            ),
            flag(self.raise_nofile, "FDGUARD_RAISE_NOFILE"),
            value(
                self.go_ancestors.map(|n| n.to_string()),
                "FDGUARD_GO_ANCESTORS",
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub options: GuardOptions,
    /// Record the program's fds through eBPF (as root), whatever program it is: no preload,
    /// no ptrace
    #[arg(long)]
    pub ebpf: bool,
    /// The program and its arguments (after `--`)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// `libfdguard.so`: `$FDGUARD_LIB`, or next to this command (where `cargo build` puts both).
pub fn library() -> Result<PathBuf, Failure> {
    if let Some(lib) = std::env::var_os("FDGUARD_LIB") {
        let lib = PathBuf::from(lib);
        return if lib.is_file() {
            Ok(std::path::absolute(&lib).unwrap_or(lib))
        } else {
            Err(Failure::bad_input(format!(
                "FDGUARD_LIB={} is not a file",
                lib.display()
            )))
        };
    }
    let exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot locate this command: {e}")))?;
    let lib = exe.with_file_name("libfdguard.so");
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(Failure::bad_input(format!(
            "{} not found: build it with `cargo build --release` (it goes next to this \
             command), or set FDGUARD_LIB to its path",
            lib.display()
        )))
    }
}

/// Where `PATH` finds `cmd` (a name without `/`), as exec would.
fn resolve(cmd: &Path) -> Option<PathBuf> {
    if cmd.components().count() > 1 || cmd.is_absolute() {
        return Some(cmd.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(cmd))
        .find(|p| p.is_file())
}

/// How `run` starts a program.
#[derive(Debug, PartialEq, Eq)]
enum Way {
    Preload,
    /// Under the tracer, for this reason (said on stderr).
    Traced(&'static str),
}

/// Whether a preload can see into the program: not into a static one (no dynamic loader
/// runs), nor a Go one (its runtime makes system calls without libc, so a preload sees none
/// of its fds). Warns of what the way taken cannot do for a set-ID program.
fn way(path: &Path) -> Way {
    let Ok(p) = Program::examine(path) else {
        return Way::Preload; // exec will say what is wrong with it
    };
    let way = match (p.is_static, p.is_go()) {
        (true, true) => Way::Traced("a statically linked Go program"),
        (true, false) => Way::Traced("statically linked"),
        (false, true) => Way::Traced("a Go program"),
        (false, false) => Way::Preload,
    };
    if p.is_setid {
        let why = match way {
            Way::Preload => "the loader ignores LD_PRELOAD for it unless you run it as its owner",
            Way::Traced(_) => "traced, it runs without its privileges (no_new_privs)",
        };
        eprintln!(
            "fdguard: {} is set-user-ID or set-group-ID: {why}",
            path.display()
        );
    }
    way
}

/// What node is told so that reports name JavaScript functions: V8 writes its perf map
/// (`/tmp/perf-PID.map`) for the code of every JS function, interpreted ones included (each
/// gets its own copy of the interpreter's entry), which report processes read (the library's
/// `perfmap`). `--perf-basic-prof` would also log V8's own stubs and write a `v8.log` into the
/// working directory; `--perf-basic-prof-only-functions` writes the map alone.
const NODE_PERF_MAP: &str = "--perf-basic-prof-only-functions --interpreted-frames-native-stack";

/// And so that a function keeps its own frame once compiled: TurboFan inlines a small function
/// (and `fs.openSync` under it) into its caller's code, where the perf map names the caller
/// alone. Two leaking functions called from one hot loop became one group named after the
/// loop (238 of 800 fds named their function). NODE_OPTIONS refuses V8's
/// `--no-turbo-inlining`, so a module preloaded before the program's own code sets it
/// (`--import`, which node knows from 18.18 on). It costs JavaScript made of small methods
/// (1.7x here), not code that spends its time in node's builtins (JSON, regular expressions,
/// I/O): `scripts/bench.sh` shows both.
const NODE_NO_INLINING: &str = "--import \"data:text/javascript,import v8 from 'node:v8'; \
     v8.setFlagsFromString('--no-turbo-inlining')\"";

/// The first node that knows `--import`.
const NODE_IMPORT_SINCE: (u32, u32) = (18, 18);

/// `NODE_OPTIONS` for a node program (`path`, or the interpreter of a `#!` script): the user's,
/// with what names JavaScript functions appended (`NODE_PERF_MAP`, and `NODE_NO_INLINING` for
/// a node that takes it, by its `--version`); with what was appended. `None` for any other
/// program, or when the user's options already say how the perf map is written
/// (`--perf-basic-prof*`, `--no-...`): they chose, and get nothing of fdguard's.
fn node_options(path: &Path, user: Option<OsString>) -> Option<(OsString, String)> {
    let program = interpreter(path).unwrap_or_else(|| path.to_path_buf());
    if Program::examine(&program).ok()?.runtime != Runtime::Node {
        return None;
    }
    let user = user.filter(|o| !o.is_empty());
    if user
        .as_ref()
        .is_some_and(|o| o.to_string_lossy().contains("perf-basic-prof"))
    {
        return None;
    }
    let mut ours = NODE_PERF_MAP.to_string();
    if node_version(&program).is_some_and(|v| v >= NODE_IMPORT_SINCE) {
        ours = format!("{ours} {NODE_NO_INLINING}");
    }
    let mut options = user.map_or_else(OsString::new, |mut o| {
        o.push(" ");
        o
    });
    options.push(&ours);
    Some((options, ours))
}

/// A node's major and minor version, as `node --version` prints it (`v20.20.2`), run without
/// the user's NODE_OPTIONS (which may not be valid for it).
fn node_version(node: &Path) -> Option<(u32, u32)> {
    let out = std::process::Command::new(node)
        .arg("--version")
        .env_remove("NODE_OPTIONS")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    parse_node_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_node_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().strip_prefix('v')?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The interpreter a `#!` script names (with `env`, its program found on PATH).
fn interpreter(path: &Path) -> Option<PathBuf> {
    let mut head = [0u8; 256];
    let n = std::io::Read::read(&mut std::fs::File::open(path).ok()?, &mut head).ok()?;
    let line = head.get(..n)?.strip_prefix(b"#!")?;
    let line = String::from_utf8_lossy(line.split(|b| *b == b'\n').next()?).into_owned();
    let mut words = line.split_whitespace();
    let first = PathBuf::from(words.next()?);
    if first.file_name().is_some_and(|n| n == "env") {
        // `env -S node --flag`, `env NAME=value node`: the first word that is neither.
        let program = words.find(|w| !w.starts_with('-') && !w.contains('='))?;
        return resolve(Path::new(program));
    }
    Some(first)
}

pub fn run(args: RunArgs) -> Outcome {
    let cmd = PathBuf::from(&args.command[0]);
    let Some(path) = resolve(&cmd) else {
        return Err(Failure {
            message: format!("{}: command not found", cmd.display()),
            code: 127,
        });
    };
    if args.ebpf {
        crate::ebpf::run(&path, &args.command, &args.options)?.finish();
    }
    if let Way::Traced(what) = way(&path) {
        eprintln!(
            "fdguard: {} is {what}: LD_PRELOAD cannot see its fds, so fdguard traces it \
             (ptrace; if fdguard is killed, so is the program)",
            path.display()
        );
        trace::run(&path, &args.command, &args.options)?.finish();
    }
    let lib = library()?;
    let mut preload = lib.clone().into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let mut command = std::process::Command::new(&path);
    if let Some((options, ours)) = node_options(&path, std::env::var_os("NODE_OPTIONS")) {
        let inlining = if ours.contains("--no-turbo-inlining") {
            ", and keeps each function's frame: no inlining"
        } else {
            "; this node is older than 18.18, so a function inlined into its caller is named \
             after the caller"
        };
        eprintln!(
            "fdguard: node: NODE_OPTIONS gets {ours} (V8 writes /tmp/perf-PID.map, which names \
             JavaScript functions in reports{inlining})"
        );
        command.env("NODE_OPTIONS", options);
    }
    let user = std::env::var_os("JAVA_TOOL_OPTIONS");
    if let Some((options, agent)) = java_tool_options(&path, &lib, user, &args.options) {
        eprintln!(
            "fdguard: {} is a JVM: JAVA_TOOL_OPTIONS gets {agent} (fdguard's JVM TI agent, so \
             that reports name Java methods; the JVM says \"Picked up JAVA_TOOL_OPTIONS\")",
            path.display()
        );
        command.env("JAVA_TOOL_OPTIONS", options);
    }
    let err = command
        .arg0(&args.command[0])
        .args(&args.command[1..])
        .envs(args.options.variables())
        .env("LD_PRELOAD", preload)
        .exec();
    Err(Failure {
        message: format!("cannot run {}: {err}", path.display()),
        code: 126,
    })
}

/// `JAVA_TOOL_OPTIONS` for a JVM (`path` a launcher such as `java`): the user's, then
/// `-agentpath:` the library (`lib`), which every JVM the program starts loads as an agent at
/// its start: `Agent_OnLoad` makes the JVM name the Java frames of creation stacks. With the
/// option it adds; `None` for any other program, when the options turn stacks (or fdguard) off,
/// or when the user's options already load fdguard.
fn java_tool_options(
    path: &Path,
    lib: &Path,
    user: Option<OsString>,
    options: &GuardOptions,
) -> Option<(OsString, String)> {
    if Program::examine(path).ok()?.runtime != Runtime::Jvm {
        return None;
    }
    let (config, _) = options.config();
    if config.disabled || config.depth == 0 {
        return None;
    }
    let name = lib.file_name()?.to_string_lossy().into_owned();
    let user = user.filter(|o| !o.is_empty());
    if user
        .as_ref()
        .is_some_and(|o| o.to_string_lossy().contains(&name))
    {
        return None;
    }
    // The JVM splits the variable at spaces, keeping quoted words whole.
    let lib = lib.to_str()?;
    let agent = match lib.contains(char::is_whitespace) {
        false => format!("-agentpath:{lib}"),
        true if !lib.contains('"') => format!("\"-agentpath:{lib}\""),
        true => return None,
    };
    let mut all = user.map_or_else(OsString::new, |mut o| {
        o.push(" ");
        o
    });
    all.push(&agent);
    Some((all, agent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_variables() {
        let o = GuardOptions {
            at_exit: true,
            leak_exitcode: Some(3),
            json: true,
            emfile: Some(EmfileMode::Shed),
            signal: Some("RTMIN+5".into()),
            ..Default::default()
        };
        assert_eq!(
            o.variables(),
            vec![
                ("FDGUARD_AT_EXIT", "1".to_string()),
                ("FDGUARD_LEAK_EXITCODE", "3".to_string()),
                ("FDGUARD_FORMAT", "json".to_string()),
                ("FDGUARD_EMFILE", "shed".to_string()),
                ("FDGUARD_SIGNAL", "RTMIN+5".to_string()),
            ]
        );
        assert!(GuardOptions::default().variables().is_empty());
        assert!(signal_arg("SEGV").is_err());
        assert!(signal_arg("usr1").is_ok());
    }

    #[test]
    fn jvms_get_the_agent_after_the_users_options() {
        let lib = Path::new("/opt/fdguard/libfdguard.so");
        let none = GuardOptions::default();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(java_tool_options(&exe, lib, None, &none), None, "not a JVM");
        let Some(java) = resolve(Path::new("java")).and_then(|j| j.canonicalize().ok()) else {
            return; // no JVM here: the integration tests require one
        };
        let agent = "-agentpath:/opt/fdguard/libfdguard.so".to_string();
        assert_eq!(
            java_tool_options(&java, lib, None, &none),
            Some((agent.clone().into(), agent.clone()))
        );
        assert_eq!(
            java_tool_options(&java, lib, Some("-Xmx64m".into()), &none),
            Some((format!("-Xmx64m {agent}").into(), agent))
        );
        let spaced = Path::new("/opt/fd guard/libfdguard.so");
        assert_eq!(
            java_tool_options(&java, spaced, None, &none).map(|(_, a)| a),
            Some("\"-agentpath:/opt/fd guard/libfdguard.so\"".to_string())
        );
        let again = Some(OsString::from("-agentpath:/elsewhere/libfdguard.so"));
        assert_eq!(java_tool_options(&java, lib, again, &none), None);
        let no_stacks = GuardOptions {
            depth: Some(0),
            ..Default::default()
        };
        assert_eq!(java_tool_options(&java, lib, None, &no_stacks), None);
    }

    /// A script in `dir` starting with `first_line`.
    fn script(dir: &Path, name: &str, first_line: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("{first_line}\nconsole.log(1)\n")).unwrap();
        path
    }

    #[test]
    fn scripts_name_their_interpreter() {
        let dir = std::env::temp_dir().join(format!("fdguard-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sh = script(&dir, "a", "#!/bin/sh -e");
        assert_eq!(interpreter(&sh), Some(PathBuf::from("/bin/sh")));
        let env = script(&dir, "b", "#!/usr/bin/env -S FOO=1 sh --flag");
        assert_eq!(interpreter(&env), resolve(Path::new("sh")));
        assert!(interpreter(&env).is_some());
        assert_eq!(interpreter(&script(&dir, "c", "plain text")), None);
        assert_eq!(interpreter(Path::new("/nonexistent")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn node_options_only_for_node_and_after_the_users() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(node_options(&exe, None), None, "not node");
        let Some(node) = resolve(Path::new("node")) else {
            return; // no node here: the integration tests require it
        };
        let (options, ours) = node_options(&node, None).unwrap();
        assert_eq!(options, OsString::from(&ours));
        assert!(ours.starts_with(NODE_PERF_MAP), "{ours}");
        let inlining = node_version(&node).unwrap() >= NODE_IMPORT_SINCE;
        assert_eq!(ours.ends_with(NODE_NO_INLINING), inlining, "{ours}");
        assert_eq!(node_options(&node, Some("".into())).unwrap().0, options);
        assert_eq!(
            node_options(&node, Some("--max-old-space-size=64".into()))
                .unwrap()
                .0,
            OsString::from(format!("--max-old-space-size=64 {ours}"))
        );
        assert_eq!(
            node_options(&node, Some("--no-perf-basic-prof".into())),
            None
        );
    }

    #[test]
    fn node_versions_read() {
        assert_eq!(parse_node_version("v20.20.2\n"), Some((20, 20)));
        assert_eq!(parse_node_version("v18.9.0"), Some((18, 9)));
        assert!(parse_node_version("v18.9.0").unwrap() < NODE_IMPORT_SINCE);
        assert_eq!(parse_node_version("20.1.0"), None);
        assert_eq!(parse_node_version(""), None);
    }
}
