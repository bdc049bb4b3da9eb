//! `fdguard limits PID`: the process's `RLIMIT_NOFILE` and where it comes from. Seed 001: a
//! login shell showed a large `ulimit -n` while the server, started by supervisord started by
//! systemd, had 1024, and only `/proc/PID/limits` told the truth. This walks the ancestors
//! (`PPid` up to the top), names the nearest one whose limit differs from its parent's (where
//! it was set), and adds what else sets or overrides it: the systemd unit, supervisord's
//! `minfds`, a container's runtime, a runtime that raises its own soft limit; then the risks
//! of the value itself and how to change it now and for the next start.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use fdguard_core::escape::push_line;
use fdguard_core::program::{Runtime, calls_select};
use fdguard_core::report::Limit;
use fdguard_core::schema::Schema;

use crate::fail::{Failure, Outcome};
use crate::target::Target;
use crate::units::count;

/// `FD_SETSIZE`: `select()` cannot watch an fd at or above it (glibc writes past its
/// `fd_set`, or aborts when fortified).
const FD_SETSIZE: u64 = 1024;
/// From this value on, a loop over every fd number (a `closefrom` fallback without
/// `close_range`, a daemon closing "all" fds at start) takes seconds to minutes.
const HUGE: u64 = 1 << 20;
/// How long `systemctl show` may take before it counts as not answering.
const SYSTEMCTL_WAIT: Duration = Duration::from_secs(3);
/// The longest chain walked (a pid namespace nests at most 32 deep; processes, far less).
const MAX_CHAIN: usize = 4096;

/// One process of the chain, the process first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    pub pid: i32,
    pub comm: String,
    #[serde(flatten)]
    pub limit: Limit,
}

/// Where the limit was set.
#[derive(Debug, Serialize)]
pub struct Origin {
    pub pid: i32,
    pub comm: String,
    /// `set`: its limit differs from its parent's, so it was set there (by the process itself,
    /// by what started it between fork and exec, or by `prlimit`); `top`: every ancestor up to
    /// the top of the chain has the same, so it is the top's (pid 1's, the kernel's default
    /// 1024:4096 or what init set).
    pub how: &'static str,
}

/// The index in `limits` (the process first) of the nearest process whose limit differs from
/// its parent's: where it was set. The last one (the top) when none differs.
pub fn origin_index(limits: &[Limit]) -> usize {
    limits
        .windows(2)
        .position(|w| w[0] != w[1])
        .unwrap_or(limits.len().saturating_sub(1))
}

/// The systemd unit a process runs in, from its `/proc/PID/cgroup`.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Unit {
    pub name: String,
    /// In a user's service manager (`systemctl --user`), not the system's.
    pub user: bool,
    /// `LimitNOFILESoft` and `LimitNOFILE` as `systemctl show` gives them; null when it did
    /// not answer.
    pub limit: Option<Limit>,
    /// Why `limit` is null: `systemctl` missing, or its error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemctl: Option<String>,
}

/// The service a cgroup path names: the last `*.service` component of the unified hierarchy
/// (`0::`), or of systemd's own v1 hierarchy (`name=systemd`). A login session's `.scope` is
/// not a service: its limit comes from PAM (`limits.conf`), not from a unit.
pub fn service_of(cgroup: &str) -> Option<(String, bool)> {
    let path = |prefix: &str| {
        cgroup
            .lines()
            .find_map(|l| l.split_once(prefix).map(|(_, p)| p.to_string()))
    };
    let path = path("0::").or_else(|| path(":name=systemd:"))?;
    let parts: Vec<&str> = path.split('/').collect();
    let at = parts.iter().rposition(|p| p.ends_with(".service"))?;
    let user = parts[..at].iter().any(|p| p.starts_with("user@"));
    Some((parts[at].to_string(), user))
}

/// `LimitNOFILESoft=1024` and `LimitNOFILE=524288` of `systemctl show`; `infinity` is none.
pub fn parse_show(text: &str) -> Option<Limit> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().parse::<u64>().ok())
    };
    Some(Limit {
        soft: value("LimitNOFILESoft")?,
        hard: value("LimitNOFILE")?,
    })
}

/// supervisord in the chain, and the `minfds` it runs with.
#[derive(Debug, Serialize)]
pub struct Supervisord {
    pub pid: i32,
    /// The configuration file it read, absolute as supervisord sees it (a relative `-c` or
    /// default path joined to its working directory); null if none could be read.
    pub config: Option<String>,
    /// The `minfds` it runs with; null when not known (no file read and none on its command
    /// line, or a value that is not a number).
    pub minfds: Option<u64>,
    /// Where `minfds` comes from: `command line` (`-a`, `--minfds`: it wins over the file),
    /// `config` (the file's `[supervisord]` section), `default` (1024: the file sets none);
    /// null when `minfds` is not known.
    pub minfds_from: Option<&'static str>,
    /// The file whose `minfds` counts when it comes from one: the configuration, or a file
    /// its `[include]` section names (read after it, so a `minfds` there wins).
    pub minfds_file: Option<String>,
}

/// The short options of supervisord that take a value (`-c FILE`, `-a N`, `-l LOGFILE`, ...).
const SUPERVISORD_SHORT_VALUED: &str = "umdlyzejiqac";
/// Its long options that take a value besides `--configuration` and `--minfds`.
const SUPERVISORD_LONG_VALUED: [&str; 12] = [
    "user",
    "umask",
    "directory",
    "logfile",
    "logfile_maxbytes",
    "logfile_backups",
    "loglevel",
    "pidfile",
    "identifier",
    "childlogdir",
    "minprocs",
    "profile_options",
];

/// supervisord's own arguments when the command line `args` runs it, with the path of its
/// script (its default configuration paths start from it): `supervisord ...`, or Python
/// running it (`python3 [-u ...] /usr/bin/supervisord ...`; `python3 -m supervisor.supervisord
/// ...`, no script path then), whose comm is the interpreter's.
pub fn supervisord_command(args: &[String]) -> Option<(Option<&str>, &[String])> {
    let name = |a: &str| a.rsplit('/').next().unwrap_or_default().to_string();
    let first = args.first()?;
    if name(first) == "supervisord" {
        return Some((Some(first), &args[1..]));
    }
    if !name(first).starts_with("python") {
        return None;
    }
    let mut i = 1;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "-m" => {
                return (args.get(i + 1)? == "supervisor.supervisord")
                    .then(|| (None, &args[i + 2..]));
            }
            "-W" | "-X" | "--check-hash-based-pycs" => i += 2,
            a if a.starts_with("-m") => {
                return (&a[2..] == "supervisor.supervisord").then(|| (None, &args[i + 1..]));
            }
            // `-c CODE` runs code, not a script; `-` reads the program from stdin.
            a if a.starts_with("-c") || a == "-" => return None,
            a if a.starts_with('-') => i += 1,
            script => {
                return (name(script) == "supervisord").then(|| (Some(script), &args[i + 1..]));
            }
        }
    }
    None
}

/// What supervisord's command line sets of what `limits` reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SupervisordArgs {
    /// `-c FILE`, `--configuration FILE`.
    pub config: Option<String>,
    /// `-a N`, `--minfds N`: overrides the file's `minfds`.
    pub minfds: Option<String>,
}

/// supervisord's arguments (after `supervisord_command`) read as its Python `getopt` reads
/// them: grouped flags (`-nc FILE` is `-n -c FILE`), values joined (`-cFILE`, `--minfds=N`) or
/// next, up to `--` or the first argument that is not an option.
pub fn supervisord_args(args: &[String]) -> SupervisordArgs {
    let mut found = SupervisordArgs::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" || a == "-" || !a.starts_with('-') {
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, joined) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let slot = match name {
                "configuration" => &mut found.config,
                "minfds" => &mut found.minfds,
                n if SUPERVISORD_LONG_VALUED.contains(&n) && joined.is_none() => {
                    it.next();
                    continue;
                }
                _ => continue,
            };
            *slot = joined.or_else(|| it.next().cloned());
            continue;
        }
        let flags = &a[1..];
        if let Some(at) = flags.find(|c| SUPERVISORD_SHORT_VALUED.contains(c)) {
            let rest = &flags[at + 1..];
            let value = match rest {
                "" => it.next().cloned(),
                joined => Some(joined.to_string()),
            };
            match &flags[at..=at] {
                "c" => found.config = value,
                "a" => found.minfds = value,
                _ => {}
            }
        }
    }
    found
}

/// The files supervisord looks for without `-c`, in its order: beside its installation
/// (`etc/` and the directory above its script's: a virtualenv's, `/usr` for
/// `/usr/bin/supervisord`), then from its working directory, then in /etc.
pub fn supervisord_default_configs(script: Option<&str>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(script) = script {
        let here = Path::new(script)
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new(""));
        paths.push(here.join("etc/supervisord.conf"));
        paths.push(here.join("supervisord.conf"));
    }
    paths.extend(
        [
            "supervisord.conf",
            "etc/supervisord.conf",
            "/etc/supervisord.conf",
            "/etc/supervisor/supervisord.conf",
        ]
        .map(PathBuf::from),
    );
    paths
}

/// The last `key` of `[section]` in an ini file as supervisord's parser (Python's
/// configparser) reads it: a name in any case, `=` or `:`, a comment after ` ;` or ` #`
/// dropped, a later value winning; none when the section does not set it.
pub fn ini_value(conf: &str, section: &str, key: &str) -> Option<String> {
    let header = format!("[{section}]");
    let mut in_section = false;
    let mut value = None;
    for line in conf.lines() {
        // An indented line continues the value above it; `#` and `;` start comment lines.
        if line.starts_with([' ', '\t', '#', ';']) {
            continue;
        }
        let end = [" ;", " #", "\t;", "\t#"]
            .iter()
            .filter_map(|c| line.find(c))
            .min()
            .unwrap_or(line.len());
        let line = line[..end].trim_end();
        if line.starts_with('[') {
            in_section = line == header;
        } else if let Some((k, v)) = line.split_once(['=', ':']).filter(|_| in_section)
            && k.trim().eq_ignore_ascii_case(key)
        {
            value = Some(v.trim().to_string());
        }
    }
    value
}

/// A value with supervisord's expansions: `%(NAME)s` from `lookup` (`ENV_X` for its
/// environment's `X`, `here` for its file's directory), `%%` for `%`; none when a name is
/// unknown (supervisord refuses such a file).
pub fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut expanded = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        expanded.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(r) = rest.strip_prefix("%%") {
            expanded.push('%');
            rest = r;
        } else {
            let (name, r) = rest.strip_prefix("%(")?.split_once(")s")?;
            expanded.push_str(&lookup(name)?);
            rest = r;
        }
    }
    expanded.push_str(rest);
    Some(expanded)
}

/// A number as Python's `int()` reads it, as supervisord reads `minfds`: spaces around, a
/// `+`, `_` between digits.
pub fn python_int(value: &str) -> Option<u64> {
    let digits = value.trim();
    let digits = digits.strip_prefix('+').unwrap_or(digits);
    let well_placed = !digits.starts_with('_') && !digits.ends_with('_') && !digits.contains("__");
    well_placed.then(|| digits.replace('_', "").parse().ok())?
}

/// Whether `name` matches a shell pattern as Python's `fnmatch` does (`*`, `?`, `[abc]`,
/// `[!abc]`, `[a-z]`), and `glob` (a name starting with `.` only for a pattern that does).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    fn class(set: &[char], c: char) -> Option<(bool, usize)> {
        let end = set.iter().skip(1).position(|&x| x == ']')? + 1;
        let (negate, items) = match set[..end].split_first() {
            Some(('!', rest)) => (true, rest),
            _ => (false, &set[..end]),
        };
        let mut hit = false;
        let mut i = 0;
        while i < items.len() {
            if items.get(i + 1) == Some(&'-') && i + 2 < items.len() {
                hit |= (items[i]..=items[i + 2]).contains(&c);
                i += 3;
            } else {
                hit |= items[i] == c;
                i += 1;
            }
        }
        Some((hit != negate, end + 1))
    }
    fn matches(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|skip| matches(&p[1..], &n[skip..])),
            Some('?') => !n.is_empty() && matches(&p[1..], &n[1..]),
            Some('[') if !n.is_empty() => match class(&p[1..], n[0]) {
                Some((hit, used)) => hit && matches(&p[1 + used..], &n[1..]),
                None => n[0] == '[' && matches(&p[1..], &n[1..]),
            },
            Some(&c) => n.first() == Some(&c) && matches(&p[1..], &n[1..]),
        }
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    (!name.starts_with('.') || pattern.starts_with('.')) && matches(&p, &n)
}

/// The process is in a container (another pid namespace than some ancestor's).
#[derive(Debug, Serialize)]
pub struct Container {
    /// The container's first process as this host sees it (pid 1 inside).
    pub init: Link,
    /// What started it: the container runtime's process (containerd-shim, conmon, ...).
    pub runtime: Link,
}

/// Everything `limits` found.
#[derive(Debug, Serialize)]
pub struct Limits {
    pub fdguard: Schema,
    pub pid: i32,
    pub limit: Limit,
    pub chain: Vec<Link>,
    pub origin: Origin,
    pub unit: Option<Unit>,
    pub supervisord: Option<Supervisord>,
    pub container: Option<Container>,
    /// The runtime its executable is (`go`, `jvm`, ...), see `program.runtime` of inspect.
    pub runtime: Runtime,
    /// The runtime raises its soft limit to the hard one at start (Go 1.19 and later, HotSpot
    /// with `MaxFDLimit`, on by default): its hard limit is what counts.
    pub raises_soft: bool,
    /// Its executable calls `select()` (`fdguard_core::program::calls_select`).
    pub calls_select: bool,
    /// What matters about the values themselves, in words.
    pub notes: Vec<String>,
    /// The commands that change the limit: now, and for the next start.
    pub fix: Vec<String>,
}

fn chain_of(pid: i32) -> Result<Vec<Link>, Failure> {
    let first = Target::open(pid)?;
    let mut chain = Vec::new();
    let mut next = Some(first);
    while let Some(t) = next.take() {
        let is_first = chain.is_empty();
        let (limit, stat) = match (t.limit(), t.process.stat()) {
            (Ok(l), Ok(s)) => (l, s),
            (Err(e), _) if is_first => return Err(e),
            _ if is_first => return Err(Failure::bad_input(format!("no process with pid {pid}"))),
            _ => break,
        };
        chain.push(Link {
            pid: t.pid,
            comm: stat.comm,
            limit,
        });
        if stat.ppid > 0 && chain.len() < MAX_CHAIN {
            next = Target::open(stat.ppid).ok();
        }
    }
    Ok(chain)
}

/// Runs `systemctl show UNIT -p LimitNOFILE,LimitNOFILESoft`, waiting `SYSTEMCTL_WAIT` at most.
fn systemctl_show(name: &str, user: bool) -> Result<Limit, String> {
    let mut cmd = std::process::Command::new("systemctl");
    if user {
        cmd.arg("--user");
    }
    cmd.args(["show", name, "-p", "LimitNOFILE,LimitNOFILESoft"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("systemctl could not be run: {e}"))?;
    let start = Instant::now();
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if start.elapsed() > SYSTEMCTL_WAIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "systemctl did not answer in {}s",
                SYSTEMCTL_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_show(&text).filter(|_| out.status.success()) {
        Some(l) => Ok(l),
        None => {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().next().unwrap_or("no LimitNOFILE in its answer");
            Err(format!("systemctl did not answer: {first}"))
        }
    }
}

fn unit_of(pid: i32) -> Option<Unit> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let (name, user) = service_of(&cgroup)?;
    let (limit, systemctl) = match systemctl_show(&name, user) {
        Ok(l) => (Some(l), None),
        Err(why) => (None, Some(why)),
    };
    Some(Unit {
        name,
        user,
        limit,
        systemctl,
    })
}

/// How a process sees files: its root and working directory (`/proc/PID/root`, `cwd`), the
/// name of that directory, and where it was started (`$PWD` of its environment).
pub struct Seen {
    pub root: PathBuf,
    pub cwd: PathBuf,
    pub cwd_named: PathBuf,
    pub started_in: Option<PathBuf>,
}

impl Seen {
    /// Where the process may have read `path`: each place as it names it (absolute) and as
    /// this process reads it. A relative path is from its working directory or, second, from
    /// where it was started (as the shell that started it set `$PWD`): a supervisord daemon
    /// with `directory=` moves there after reading its file.
    pub fn places(&self, path: &Path) -> Vec<(PathBuf, PathBuf)> {
        if path.is_absolute() {
            return vec![(path.to_path_buf(), self.inside(path))];
        }
        let mut at = vec![(self.cwd_named.join(path), self.cwd.join(path))];
        if let Some(pwd) = self.started_in.as_ref().filter(|p| p.is_absolute()) {
            at.push((pwd.join(path), self.inside(pwd).join(path)));
        }
        at
    }

    /// Where this process reads the process's absolute path `abs`.
    pub fn inside(&self, abs: &Path) -> PathBuf {
        self.root.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    /// The files an `[include]` section's `files` names, in supervisord's order: each pattern
    /// from `base` (the including file's directory), its matches sorted. A wildcard before the
    /// last component matches nothing here (supervisord's glob would follow it).
    pub fn included(&self, base: &Path, files: &str) -> Vec<PathBuf> {
        let mut all = Vec::new();
        for path in files.split_whitespace().map(|p| base.join(p)) {
            let (Some(dir), Some(pattern)) = (path.parent(), path.file_name()) else {
                continue;
            };
            let pattern = pattern.to_string_lossy();
            let mut found: Vec<PathBuf> = std::fs::read_dir(self.inside(dir))
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    glob_matches(&pattern, &name).then(|| dir.join(name))
                })
                .collect();
            found.sort();
            all.extend(found);
        }
        all
    }
}

/// The nearest supervisord of the chain: the file it read (its `-c`, or the first of its
/// default paths that exists), through its `/proc/PID/root` and `cwd`, and its `minfds`.
fn supervisord_of(chain: &[Link]) -> Option<Supervisord> {
    chain.iter().find_map(|l| {
        let t = Target::open(l.pid).ok()?;
        let cmdline = t.cmdline();
        let (script, args) = supervisord_command(&cmdline)?;
        let given = supervisord_args(args);
        let candidates = match &given.config {
            Some(c) => vec![PathBuf::from(c)],
            None => supervisord_default_configs(script),
        };
        let env = t.process.environ().unwrap_or_default();
        let started_in = env.get(OsStr::new("PWD")).map(PathBuf::from);
        let seen = Seen {
            root: t.root(),
            cwd: t.cwd(),
            cwd_named: std::fs::read_link(t.cwd()).unwrap_or_default(),
            started_in,
        };
        let mut places = candidates.iter().flat_map(|c| seen.places(c));
        // The first that exists is the one it read, readable here or not.
        let read = places
            .find(|(_, file)| file.exists())
            .and_then(|(named, file)| Some((named, std::fs::read_to_string(file).ok()?)));
        let lookup = |name: &str, here: &Path| match name {
            "here" => Some(here.display().to_string()),
            n => Some(
                env.get(OsStr::new(n.strip_prefix("ENV_")?))?
                    .to_string_lossy()
                    .into_owned(),
            ),
        };
        // The file's `minfds`, or the last one of the files it includes (read after it).
        let in_files = read.as_ref().map(|(named, text)| {
            let here = named.parent().unwrap_or(Path::new("/"));
            let files = ini_value(text, "include", "files")
                .and_then(|f| expand(&f, |n| lookup(n, here)))
                .map(|f| seen.included(here, &f))
                .unwrap_or_default();
            let mut found = ini_value(text, "supervisord", "minfds").map(|v| (named.clone(), v));
            for file in files {
                let text = std::fs::read_to_string(seen.inside(&file)).unwrap_or_default();
                if let Some(v) = ini_value(&text, "supervisord", "minfds") {
                    found = Some((file, v));
                }
            }
            found
        });
        let (minfds, from, file) = match (&given.minfds, in_files) {
            (Some(v), _) => (python_int(v), "command line", None),
            (None, Some(Some((file, v)))) => {
                let here = file.parent().unwrap_or(Path::new("/"));
                let n = expand(&v, |n| lookup(n, here)).and_then(|v| python_int(&v));
                (n, "config", Some(file))
            }
            (None, Some(None)) => (Some(1024), "default", None),
            (None, None) => (None, "default", None),
        };
        let absolute = |p: PathBuf| p.components().collect::<PathBuf>().display().to_string();
        Some(Supervisord {
            pid: l.pid,
            config: read.map(|(named, _)| absolute(named)),
            minfds_from: minfds.map(|_| from),
            minfds_file: file.map(absolute),
            minfds,
        })
    })
}

fn pid_namespace(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// The last process of the chain in the process's pid namespace, and the next one up, when
/// there is one outside it.
fn container_of(chain: &[Link]) -> Option<Container> {
    let ns = pid_namespace(chain.first()?.pid)?;
    let outside = chain
        .iter()
        .position(|l| pid_namespace(l.pid).is_some_and(|n| n != ns))?;
    Some(Container {
        init: chain[outside.checked_sub(1)?].clone(),
        runtime: chain[outside].clone(),
    })
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".to_string(), |n| count(n as usize))
}

fn spec(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

/// What the values themselves mean for the program (`effective`: the soft limit it runs
/// with, after a runtime raised it).
pub fn value_notes(l: &Limits, effective: Option<u64>) -> Vec<String> {
    let mut notes = Vec::new();
    if l.raises_soft {
        notes.push(format!(
            "a {} program raises its soft limit to the hard one when it starts{}: it runs \
             with {}, whatever soft limit it was given",
            if l.runtime == Runtime::Go {
                "Go"
            } else {
                "HotSpot (JVM)"
            },
            if l.runtime == Runtime::Go {
                " (Go 1.19 and later)"
            } else {
                " (-XX:+MaxFDLimit, on by default; -XX:-MaxFDLimit keeps it)"
            },
            show(effective)
        ));
    }
    if effective.is_none_or(|s| s > FD_SETSIZE) && l.runtime != Runtime::Go {
        let who = if l.calls_select {
            "its executable calls select(), which"
        } else {
            "code that uses select()"
        };
        notes.push(format!(
            "above {FD_SETSIZE} (FD_SETSIZE): {who} breaks on an fd >= {FD_SETSIZE} (memory \
             past its fd_set is overwritten, or a fortified build aborts); poll or epoll \
             have no such bound"
        ));
    }
    let hard = l.limit.hard;
    if effective.is_none_or(|s| s >= HUGE) || hard.is_none_or(|h| h >= HUGE) {
        notes.push(format!(
            "a huge limit ({}): code that loops over every fd number up to it (closefrom \
             without close_range, old Python's subprocess close_fds, daemons closing all fds \
             at start) makes that many calls, seconds to minutes of CPU",
            show(effective.zip(hard).map(|(s, h)| s.max(h)))
        ));
    }
    if let (Some(s), Some(h)) = (l.limit.soft, hard)
        && s < h
        && !l.raises_soft
    {
        notes.push(format!(
            "the soft limit is below the hard one ({} of {}): the process may raise it \
             itself (setrlimit), and its user can raise it in place (prlimit)",
            count(s as usize),
            count(h as usize)
        ));
    }
    notes
}

/// The commands that change the limit: in place now, and where it is set for the next start.
pub fn fixes(l: &Limits) -> Vec<String> {
    let pid = l.pid;
    let (soft, hard) = (l.limit.soft, l.limit.hard);
    let mut fix = Vec::new();
    let target = match (soft, hard) {
        (Some(s), Some(h)) if s < h && h < HUGE => {
            fix.push(format!(
                "now: prlimit --pid {pid} --nofile={h}:{h} (the soft limit up to the hard \
                 one: the process's user may)"
            ));
            h
        }
        (_, Some(h)) if h < HUGE => {
            let t = (h * 4).next_power_of_two().min(HUGE);
            fix.push(format!(
                "now: prlimit --pid {pid} --nofile={t}:{t} (an example, 4 times the hard \
                 limit: size it to what the program needs; raising the hard limit needs root, \
                 CAP_SYS_RESOURCE)"
            ));
            t
        }
        _ => {
            fix.push(format!(
                "now: prlimit --pid {pid} --nofile=65536:65536 (an example: a bounded limit \
                 keeps fd loops short; fds already open above it stay open)"
            ));
            65536
        }
    };
    if let Some(u) = &l.unit {
        let user = if u.user { " --user" } else { "" };
        fix.push(format!(
            "next start: systemctl{user} edit {} and add \"[Service]\" \"LimitNOFILE={target}\" \
             (a drop-in, /etc/systemd/system/{}.d/override.conf), then systemctl{user} \
             daemon-reload && systemctl{user} restart {}",
            u.name, u.name, u.name
        ));
    }
    if let Some(s) = &l.supervisord {
        let setting = match (s.minfds_from, &s.config) {
            (Some("command line"), _) => format!(
                "-a {target} (--minfds) on its command line, where it overrides the file's minfds"
            ),
            (_, c) => format!(
                "minfds={target} in the [supervisord] section of {}",
                s.minfds_file
                    .as_deref()
                    .or(c.as_deref())
                    .unwrap_or("its configuration")
            ),
        };
        fix.push(format!(
            "next start: {setting}, then restart supervisord (pid {}: at start it raises its \
             soft limit to minfds when that is lower, and its programs inherit it)",
            s.pid
        ));
    }
    if let Some(c) = &l.container {
        fix.push(format!(
            "next start: the container's limit (docker run --ulimit nofile={target}:{target}, \
             a compose file's ulimits, or the runtime's default: pid {} ({}) passes on {})",
            c.runtime.pid,
            c.runtime.comm,
            spec(c.runtime.limit.hard)
        ));
    }
    if l.unit.is_none() && l.supervisord.is_none() && l.container.is_none() {
        let o = &l.origin;
        fix.push(format!(
            "next start: where pid {} ({}) gets it: the script or program that starts it \
             (ulimit -n {target}), or for a login session /etc/security/limits.conf \
             (pam_limits)",
            o.pid, o.comm
        ));
    }
    fix
}

/// Whether the runtime raises its soft limit to the hard one at start: Go 1.19 and later
/// always (its os package, for its children it puts the original back), HotSpot unless its
/// command line turns `MaxFDLimit` off.
pub fn raises_own_soft(runtime: Runtime, cmdline: &[String]) -> bool {
    match runtime {
        Runtime::Go => true,
        Runtime::Jvm => !cmdline.iter().any(|a| a == "-XX:-MaxFDLimit"),
        _ => false,
    }
}

/// Everything about `pid`'s limit.
pub fn examine(pid: i32) -> Result<Limits, Failure> {
    let chain = chain_of(pid)?;
    let at = origin_index(&chain.iter().map(|l| l.limit).collect::<Vec<_>>());
    let origin = Origin {
        pid: chain[at].pid,
        comm: chain[at].comm.clone(),
        how: if at + 1 < chain.len() { "set" } else { "top" },
    };
    let target = Target::open(pid)?;
    let runtime = target.program().map_or(Runtime::Native, |p| p.runtime);
    let runtime = match runtime {
        Runtime::Native => target.mapped_runtime().unwrap_or(runtime),
        r => r,
    };
    let mut l = Limits {
        fdguard: Schema,
        pid,
        limit: chain[0].limit,
        unit: unit_of(pid),
        supervisord: supervisord_of(&chain),
        container: container_of(&chain),
        origin,
        chain,
        runtime,
        raises_soft: raises_own_soft(runtime, &target.cmdline()),
        calls_select: calls_select(&PathBuf::from(format!("/proc/{pid}/exe"))),
        notes: Vec::new(),
        fix: Vec::new(),
    };
    // A runtime that raised its soft limit has already: /proc shows the raised one.
    let effective = if l.raises_soft {
        l.limit.hard
    } else {
        l.limit.soft
    };
    l.notes = value_notes(&l, effective);
    l.fix = fixes(&l);
    Ok(l)
}

/// supervisord's `minfds`, where it comes from, and whether it is what set supervisord's own
/// soft limit (a minimum: a higher limit it was started with stays).
fn supervisord_line(s: &Supervisord, chain: &[Link]) -> String {
    let mut line = format!("supervisord: pid {}", s.pid);
    let (Some(n), Some(from)) = (s.minfds, s.minfds_from) else {
        let _ = match s.minfds_file.as_ref().or(s.config.as_ref()) {
            Some(c) => write!(line, "; minfds unknown: its value in {c} is not a number"),
            None => write!(
                line,
                "; its configuration could not be read (minfds unknown)"
            ),
        };
        return line;
    };
    let _ = write!(line, ", minfds {}", count(n as usize));
    let _ = match (from, &s.config) {
        ("command line", Some(c)) => write!(line, " (from its command line, over {c}'s)"),
        ("command line", None) => write!(line, " (from its command line)"),
        ("default", Some(c)) => write!(line, " (the default: {c} sets none)"),
        _ => write!(
            line,
            " (from {})",
            s.minfds_file.as_deref().unwrap_or_default()
        ),
    };
    let soft = chain.iter().find(|c| c.pid == s.pid).map(|c| c.limit.soft);
    line.push_str(match soft {
        Some(Some(soft)) if soft == n => {
            "; its soft limit is minfds (it raises a lower one to it at start)"
        }
        Some(Some(soft)) if soft < n => {
            "; its soft limit is below minfds: lowered after it started (prlimit --pid)"
        }
        _ => {
            "; its soft limit is above minfds: it kept the limit it was started with (minfds \
             is a minimum)"
        }
    });
    line
}

pub fn render_text(l: &Limits) -> String {
    let first = &l.chain[0];
    let mut lines = vec![format!(
        "pid {} ({}): soft {}, hard {} (from /proc/{}/limits)",
        l.pid,
        first.comm,
        show(l.limit.soft),
        show(l.limit.hard),
        l.pid
    )];
    let o = &l.origin;
    lines.push(match o.how {
        "set" if o.pid == l.pid => {
            "set by the process itself: its limit differs from its parent's".to_string()
        }
        "set" => format!(
            "set in pid {} ({}): the nearest ancestor whose limit differs from its parent's",
            o.pid, o.comm
        ),
        _ => format!(
            "the same all the way up: pid {} ({}), the top of the chain, has it",
            o.pid, o.comm
        ),
    });
    lines.push(String::new());
    lines.push("chain, the process first:".into());
    lines.push(format!(
        "{:>9}  {:<16} {:>13} {:>13}",
        "pid", "comm", "soft", "hard"
    ));
    for link in &l.chain {
        let mut row = format!(
            "{:>9}  {:<16} {:>13} {:>13}",
            link.pid,
            link.comm,
            show(link.limit.soft),
            show(link.limit.hard)
        );
        if link.pid == o.pid {
            row.push_str("  <- set here");
        }
        lines.push(row);
    }
    lines.push(String::new());
    match &l.unit {
        Some(u) => {
            let mut line = format!(
                "systemd: in {}{}",
                u.name,
                if u.user { " (a user's unit)" } else { "" }
            );
            match (&u.limit, &u.systemctl) {
                (Some(lim), _) => {
                    let _ = write!(
                        line,
                        ": LimitNOFILESoft={}, LimitNOFILE={} (systemctl show)",
                        spec(lim.soft),
                        spec(lim.hard)
                    );
                }
                (None, Some(why)) => {
                    let _ = write!(line, "; its LimitNOFILE is not known: {why}");
                }
                (None, None) => {}
            }
            lines.push(line);
        }
        None => lines.push("systemd: not in a service (from /proc/PID/cgroup)".into()),
    }
    if let Some(s) = &l.supervisord {
        lines.push(supervisord_line(s, &l.chain));
    }
    if let Some(c) = &l.container {
        lines.push(format!(
            "container: its first process is pid {} ({}, soft {}, hard {}), started by pid {} \
             ({}, soft {}, hard {})",
            c.init.pid,
            c.init.comm,
            show(c.init.limit.soft),
            show(c.init.limit.hard),
            c.runtime.pid,
            c.runtime.comm,
            show(c.runtime.limit.soft),
            show(c.runtime.limit.hard)
        ));
    }
    for n in &l.notes {
        lines.push(format!("note: {n}"));
    }
    lines.push(String::new());
    for f in &l.fix {
        lines.push(format!("fix {f}"));
    }
    let mut out = String::new();
    for line in &lines {
        push_line(&mut out, line);
    }
    out
}

pub fn run(pid: i32, json: bool) -> Outcome {
    let l = examine(pid)?;
    if json {
        println!("{}", serde_json::to_string(&l).expect("serializable"));
    } else {
        print!("{}", render_text(&l));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(soft: u64, hard: u64) -> Limit {
        Limit {
            soft: Some(soft),
            hard: Some(hard),
        }
    }

    #[test]
    fn the_origin_is_the_nearest_that_differs_from_its_parent() {
        // child, parent (lowered), grandparent, init.
        let chain = [
            lim(100, 200),
            lim(100, 200),
            lim(20000, 20000),
            lim(20000, 20000),
        ];
        assert_eq!(origin_index(&chain), 1);
        // The process itself raised it (Go).
        assert_eq!(origin_index(&[lim(200, 200), lim(100, 200)]), 0);
        // The same all the way up: the top.
        assert_eq!(origin_index(&[lim(1024, 4096); 3]), 2);
        assert_eq!(origin_index(&[lim(1024, 4096)]), 0);
        // Unlimited differs from any number.
        assert_eq!(origin_index(&[Limit::default(), lim(1, 1)]), 0);
    }

    #[test]
    fn services_from_cgroup_files() {
        let v2 = "0::/system.slice/nginx.service\n";
        assert_eq!(service_of(v2), Some(("nginx.service".into(), false)));
        let v1 = "12:pids:/\n1:name=systemd:/system.slice/supervisor.service\n";
        assert_eq!(service_of(v1), Some(("supervisor.service".into(), false)));
        let user = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app.service";
        assert_eq!(service_of(user), Some(("app.service".into(), true)));
        let manager = "0::/user.slice/user-1000.slice/user@1000.service/init.scope";
        assert_eq!(
            service_of(manager),
            Some(("user@1000.service".into(), false))
        );
        assert_eq!(
            service_of("0::/user.slice/user-1000.slice/session-3.scope"),
            None
        );
        assert_eq!(service_of("0::/\n"), None);
    }

    #[test]
    fn systemctl_show_answers() {
        assert_eq!(
            parse_show("LimitNOFILE=524288\nLimitNOFILESoft=1024\n"),
            Some(lim(1024, 524288))
        );
        assert_eq!(
            parse_show("LimitNOFILESoft=infinity\nLimitNOFILE=infinity\n"),
            Some(Limit::default())
        );
        assert_eq!(parse_show(""), None);
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn supervisord_run_directly_or_by_python() {
        let own = |a: &[&str]| {
            let a = args(a);
            supervisord_command(&a).map(|(script, rest)| (script.map(String::from), rest.to_vec()))
        };
        let script = |s: &str, rest: &[&str]| Some((Some(s.to_string()), args(rest)));
        assert_eq!(
            own(&["/usr/bin/supervisord", "-n"]),
            script("/usr/bin/supervisord", &["-n"])
        );
        // Debian's script under its shebang: comm `supervisord`, the interpreter first.
        assert_eq!(
            own(&["/usr/bin/python3", "/usr/bin/supervisord", "-c", "x"]),
            script("/usr/bin/supervisord", &["-c", "x"])
        );
        // Interpreter options before the script, some with a value of their own.
        assert_eq!(
            own(&[
                "python3.11",
                "-u",
                "-X",
                "dev",
                "/venv/bin/supervisord",
                "-n"
            ]),
            script("/venv/bin/supervisord", &["-n"])
        );
        assert_eq!(
            own(&["python3", "-m", "supervisor.supervisord", "-a", "9"]),
            Some((None, args(&["-a", "9"])))
        );
        assert_eq!(
            own(&["python3", "-msupervisor.supervisord"]),
            Some((None, vec![]))
        );
        assert_eq!(own(&["python3", "-m", "http.server"]), None);
        assert_eq!(own(&["python3", "-c", "import supervisord"]), None);
        assert_eq!(own(&["python3", "/srv/app.py", "supervisord"]), None);
        assert_eq!(own(&["supervisorctl", "status"]), None);
        assert_eq!(own(&[]), None);
    }

    #[test]
    fn supervisord_options_as_getopt_reads_them() {
        let given = |a: &[&str]| {
            let g = supervisord_args(&args(a));
            (g.config, g.minfds)
        };
        let both = |c: &str, m: &str| (Some(c.to_string()), Some(m.to_string()));
        assert_eq!(
            given(&["-c", "/etc/s.conf", "-a", "4096"]),
            both("/etc/s.conf", "4096")
        );
        assert_eq!(given(&["-c/x.conf", "-a4096"]), both("/x.conf", "4096"));
        // Grouped flags: `-nc FILE` is `-n -c FILE`.
        assert_eq!(given(&["-nc", "s.conf", "-na", "7"]), both("s.conf", "7"));
        assert_eq!(
            given(&["--configuration=y.conf", "--minfds", "5"]),
            both("y.conf", "5")
        );
        // The values of other options are not options: `-l -c` logs to a file named `-c`.
        assert_eq!(given(&["-l", "-c", "--user", "-a", "-n"]), (None, None));
        assert_eq!(
            given(&["--logfile=-a", "-c", "s.conf"]).0,
            Some("s.conf".into())
        );
        // getopt stops at the first argument that is not an option.
        assert_eq!(given(&["extra", "-c", "s.conf"]), (None, None));
        assert_eq!(given(&["--", "-c", "s.conf"]), (None, None));
    }

    #[test]
    fn supervisord_default_paths_start_beside_its_script() {
        let paths = |s: Option<&str>| -> Vec<String> {
            supervisord_default_configs(s)
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        };
        assert_eq!(
            paths(Some("/venv/bin/supervisord")),
            [
                "/venv/etc/supervisord.conf",
                "/venv/supervisord.conf",
                "supervisord.conf",
                "etc/supervisord.conf",
                "/etc/supervisord.conf",
                "/etc/supervisor/supervisord.conf"
            ]
        );
        // A script named without a directory: Python's dirname is "", the paths relative.
        assert_eq!(
            paths(Some("supervisord"))[..2],
            ["etc/supervisord.conf", "supervisord.conf"]
        );
        assert_eq!(paths(None).len(), 4);
    }

    #[test]
    fn relative_paths_from_the_working_directory_then_where_it_started() {
        let seen = Seen {
            root: "/proc/9/root".into(),
            cwd: "/proc/9/cwd".into(),
            cwd_named: "/tmp".into(),
            started_in: Some("/srv/app".into()),
        };
        let places = |p: &str| -> Vec<(String, String)> {
            seen.places(Path::new(p))
                .iter()
                .map(|(n, r)| (n.display().to_string(), r.display().to_string()))
                .collect()
        };
        let pair = |n: &str, r: &str| (n.to_string(), r.to_string());
        assert_eq!(
            places("/etc/supervisord.conf"),
            [pair(
                "/etc/supervisord.conf",
                "/proc/9/root/etc/supervisord.conf"
            )]
        );
        assert_eq!(
            places("s.conf"),
            [
                pair("/tmp/s.conf", "/proc/9/cwd/s.conf"),
                pair("/srv/app/s.conf", "/proc/9/root/srv/app/s.conf")
            ]
        );
        let seen = Seen {
            started_in: Some("relative".into()),
            ..seen
        };
        assert_eq!(seen.places(Path::new("s.conf")).len(), 1);
    }

    #[test]
    fn minfds_as_configparser_reads_it() {
        let minfds = |conf: &str| ini_value(conf, "supervisord", "minfds");
        let conf = "[unix_http_server]\nminfds=1\n[supervisord]\nlogfile=/x ; log\n\
                    minfds = 65536 ; fds\n[program:a]\nminfds=2\n";
        assert_eq!(minfds(conf).as_deref(), Some("65536"));
        assert_eq!(minfds("[supervisord]\nnodaemon=true\n"), None);
        // Any case, `:`, a comment after the header, the last one wins.
        let conf = "[supervisord] ; main\nMinFDs: 100\nminfds=200\t# more\n";
        assert_eq!(minfds(conf).as_deref(), Some("200"));
        // Comment lines and indented (continuation) lines set nothing; a `;` without a space
        // before it is part of the value (which supervisord then refuses).
        let conf = "[supervisord]\n;minfds=1\n#minfds=2\n  minfds=3\nminfds=4;x\n";
        assert_eq!(minfds(conf).as_deref(), Some("4;x"));
        let conf = "[include]\nfiles = conf.d/*.conf %(here)s/more.ini\n";
        assert_eq!(
            ini_value(conf, "include", "files").as_deref(),
            Some("conf.d/*.conf %(here)s/more.ini")
        );

        let lookup = |name: &str| match name {
            "ENV_FDS" => Some("5000".to_string()),
            "here" => Some("/etc/supervisor".to_string()),
            _ => None,
        };
        let number = |v: &str| expand(v, lookup).and_then(|v| python_int(&v));
        assert_eq!(number("4096"), Some(4096));
        assert_eq!(number(" +4_096 "), Some(4096));
        assert_eq!(number("%(ENV_FDS)s"), Some(5000));
        assert_eq!(number("1%(ENV_FDS)s"), Some(15000));
        assert_eq!(number("%(ENV_OTHER)s"), None);
        assert_eq!(
            expand("%(here)s/conf.d/*.conf 100%%", lookup).as_deref(),
            Some("/etc/supervisor/conf.d/*.conf 100%")
        );
        for bad in [
            "4;x", "4k", "_4", "4__0", "0x10", "-1", "", "%(here)s", "%(FDS)",
        ] {
            assert_eq!(number(bad), None, "{bad}");
        }
    }

    #[test]
    fn include_patterns_as_glob_matches_them() {
        assert!(glob_matches("*.conf", "limits.conf"));
        assert!(!glob_matches("*.conf", "limits.conf.bak"));
        assert!(!glob_matches("*.conf", ".hidden.conf"));
        assert!(glob_matches(".*.conf", ".hidden.conf"));
        assert!(glob_matches("app-?.ini", "app-1.ini"));
        assert!(!glob_matches("app-?.ini", "app-10.ini"));
        assert!(glob_matches("[a-c]*", "b.conf") && !glob_matches("[a-c]*", "d.conf"));
        assert!(glob_matches("[!a]*", "b") && !glob_matches("[!a]*", "a"));
        assert!(glob_matches("[x", "[x"));
        assert!(glob_matches("plain.conf", "plain.conf"));

        let dir = std::env::temp_dir().join(format!("fdguard-include-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        for f in ["b.conf", "a.conf", "c.txt", ".d.conf"] {
            std::fs::write(dir.join("conf.d").join(f), "").unwrap();
        }
        std::fs::write(dir.join("last.ini"), "").unwrap();
        let seen = Seen {
            root: "/".into(),
            cwd: "/".into(),
            cwd_named: "/".into(),
            started_in: None,
        };
        let found = seen.included(&dir, "conf.d/*.conf last.ini none/*.conf */b.conf");
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<String> = found
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["conf.d/a.conf", "conf.d/b.conf", "last.ini"]);
    }

    #[test]
    fn supervisord_line_and_fix() {
        let mut l = limits(Some(2345), Some(4096), Runtime::Native);
        l.supervisord = Some(Supervisord {
            pid: 7,
            config: Some("/etc/s.conf".into()),
            minfds: Some(2345),
            minfds_from: Some("config"),
            minfds_file: Some("/etc/s.conf".into()),
        });
        let s = l.supervisord.as_ref().unwrap();
        assert_eq!(
            supervisord_line(s, &l.chain),
            "supervisord: pid 7, minfds 2,345 (from /etc/s.conf); its soft limit is minfds \
             (it raises a lower one to it at start)"
        );
        let f = fixes(&l);
        assert!(
            f[1].starts_with("next start: minfds=4096 in the [supervisord] section of /etc/s.conf"),
            "{f:?}"
        );
        l.chain[0].limit.soft = Some(8000);
        assert!(
            supervisord_line(s, &l.chain)
                .ends_with("kept the limit it was started with (minfds is a minimum)")
        );
        l.chain[0].limit.soft = Some(100);
        assert!(
            supervisord_line(s, &l.chain).ends_with("lowered after it started (prlimit --pid)")
        );
        let s = l.supervisord.as_mut().unwrap();
        s.minfds_from = Some("command line");
        assert!(
            supervisord_line(s, &l.chain).contains("(from its command line, over /etc/s.conf's)")
        );
        assert!(fixes(&l)[1].starts_with("next start: -a 4096 (--minfds) on its command line"));
        // A minfds in a file the configuration includes wins: the fix edits that file.
        let s = l.supervisord.as_mut().unwrap();
        (s.minfds_from, s.minfds_file) = (Some("config"), Some("/etc/conf.d/fds.conf".into()));
        assert!(supervisord_line(s, &l.chain).contains("(from /etc/conf.d/fds.conf)"));
        assert!(fixes(&l)[1].contains("[supervisord] section of /etc/conf.d/fds.conf"));
        let s = l.supervisord.as_mut().unwrap();
        (s.minfds, s.minfds_from, s.minfds_file) = (None, None, None);
        assert!(
            supervisord_line(s, &l.chain)
                .ends_with("minfds unknown: its value in /etc/s.conf is not a number")
        );
        s.config = None;
        assert!(
            supervisord_line(s, &l.chain)
                .ends_with("its configuration could not be read (minfds unknown)")
        );
    }

    #[test]
    fn runtimes_that_raise_their_own_soft_limit() {
        assert!(raises_own_soft(Runtime::Go, &[]));
        assert!(raises_own_soft(
            Runtime::Jvm,
            &args(&["java", "-jar", "a.jar"])
        ));
        assert!(!raises_own_soft(
            Runtime::Jvm,
            &args(&["java", "-XX:-MaxFDLimit", "-jar", "a.jar"])
        ));
        assert!(!raises_own_soft(Runtime::Python, &[]));
    }

    fn limits(soft: Option<u64>, hard: Option<u64>, runtime: Runtime) -> Limits {
        let link = Link {
            pid: 7,
            comm: "server".into(),
            limit: Limit { soft, hard },
        };
        Limits {
            fdguard: Schema,
            pid: 7,
            limit: link.limit,
            chain: vec![link],
            origin: Origin {
                pid: 7,
                comm: "server".into(),
                how: "top",
            },
            unit: None,
            supervisord: None,
            container: None,
            runtime,
            raises_soft: raises_own_soft(runtime, &[]),
            calls_select: false,
            notes: Vec::new(),
            fix: Vec::new(),
        }
    }

    #[test]
    fn notes_on_the_values() {
        let l = limits(Some(1024), Some(524288), Runtime::Native);
        let notes = value_notes(&l, Some(1024));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("below the hard one"));
        let l = limits(Some(1073741816), Some(1073741816), Runtime::Native);
        let notes = value_notes(&l, l.limit.soft);
        assert!(
            notes.iter().any(|n| n.contains("code that uses select()")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("1,073,741,816")),
            "{notes:?}"
        );
        let mut l = limits(Some(4096), Some(4096), Runtime::Native);
        l.calls_select = true;
        let notes = value_notes(&l, l.limit.soft);
        assert!(
            notes[0].contains("its executable calls select(), which breaks"),
            "{notes:?}"
        );
        let l = limits(Some(1024), Some(4096), Runtime::Go);
        let notes = value_notes(&l, Some(4096));
        assert!(
            notes[0].contains("Go 1.19") && notes[0].contains("4,096"),
            "{notes:?}"
        );
        assert!(!notes.iter().any(|n| n.contains("select()")), "{notes:?}");
    }

    #[test]
    fn fixes_now_and_next_time() {
        let mut l = limits(Some(1024), Some(4096), Runtime::Native);
        l.unit = Some(Unit {
            name: "app.service".into(),
            user: false,
            limit: None,
            systemctl: None,
        });
        let f = fixes(&l);
        assert!(
            f[0].starts_with("now: prlimit --pid 7 --nofile=4096:4096"),
            "{f:?}"
        );
        assert!(
            f[1].contains("LimitNOFILE=4096") && f[1].contains("daemon-reload"),
            "{f:?}"
        );
        let l = limits(Some(1024), Some(1024), Runtime::Native);
        let f = fixes(&l);
        assert!(f[0].contains("--nofile=4096:4096"), "{f:?}");
        assert!(f[1].contains("ulimit -n 4096"), "{f:?}");
    }
}
