//! `fdguard report PID`: asks a process running under fdguard for a report and prints it once
//! it is complete.
//!
//! The library publishes the signal it answers now and where its reports go
//! (`fdguard_core::published`); the command sends only that signal, with a request
//! (`fdguard_core::request`) naming the format it wants and a reply file it made in the
//! process's `/tmp`, so that the report arrives where the command reads it whatever the process
//! does with its own reports. Without a reply file (`--file`, or none could be made), it reads
//! where the process writes its reports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fdguard_core::config::{Format, ReportDest, expand_report_path};
use fdguard_core::published::{Destination, Signal, View};
use fdguard_core::request::Request;
use fdguard_core::signals::{self, parse_signal};

use crate::fail::{Failure, Outcome};
use crate::os;
use crate::target::{LibState, Loaded, Target};

/// Stands for `%t` while looking for the report file: the time fdguard loaded, to the second,
/// is not known from outside, so any `YYYYMMDDTHHMMSSZ` matches.
const ANY_TIME: &str = "\u{1}TIME\u{1}";

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit())
}

/// The newest existing file that `template` names for `pid` (relative paths are relative to
/// the process's working directory).
fn report_file(target: &Target, template: &[u8]) -> Result<PathBuf, Failure> {
    let expanded = expand_report_path(template, target.pid as u32, ANY_TIME);
    let expanded = String::from_utf8_lossy(&expanded).into_owned();
    let path = if expanded.starts_with('/') {
        PathBuf::from(&expanded)
    } else {
        target.cwd().join(&expanded)
    };
    let shown = expanded.replace(ANY_TIME, "%t");
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let Some(name) = name.filter(|n| n.contains(ANY_TIME)) else {
        if path.to_string_lossy().contains(ANY_TIME) {
            return Err(Failure::bad_input(format!(
                "pid {}'s FDGUARD_REPORT puts %t in a directory name ({shown}); `fdguard \
                 report` finds only files named with %t",
                target.pid
            )));
        }
        return Ok(path);
    };
    let (before, after) = name.split_once(ANY_TIME).expect("contains it");
    let dir = path.parent().unwrap_or(Path::new("/"));
    let newest = std::fs::read_dir(dir)
        .map_err(|e| Failure::failed(format!("cannot list {}: {e}", dir.display())))?
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix(before)
                .and_then(|r| r.strip_suffix(after))
                .is_some_and(is_timestamp)
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    newest.map(|e| e.path()).ok_or_else(|| {
        Failure::failed(format!(
            "pid {} writes reports to {shown}, but no such file exists yet (fdguard creates \
             it with its first report): name the file with --file",
            target.pid
        ))
    })
}

/// The first complete report made on a signal, for `pid`, in `text` (what was appended since
/// the request).
fn find_report(text: &str, pid: i32, format: Format) -> Option<String> {
    let complete = &text[..text.rfind('\n')? + 1];
    match format {
        Format::Json => complete
            .lines()
            .find(|l| {
                serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                    v.get("event").is_none()
                        && v.get("pid").and_then(|p| p.as_i64()) == Some(i64::from(pid))
                        && v.get("reason").and_then(|r| r.as_str()) == Some("signal")
                })
            })
            .map(|l| format!("{l}\n")),
        Format::Text => {
            // Every line of the report is `==PID== ...`, its blank ones `==PID==`.
            let bare = format!("=={pid}==");
            let prefix = format!("{bare} ");
            let mine: Vec<&str> = complete
                .lines()
                .filter(|l| l.starts_with(&prefix) || *l == bare)
                .collect();
            let mut start = None;
            for (i, line) in mine.iter().enumerate() {
                let body = line.strip_prefix(&prefix).unwrap_or("");
                if body.starts_with("fdguard: ") && body != "fdguard: end of report" {
                    start = Some(i);
                } else if body == "fdguard: end of report" {
                    let block = &mine[start?..=i];
                    if block
                        .iter()
                        .any(|l| l.starts_with(&format!("{prefix}reason: signal")))
                    {
                        return Some(block.iter().map(|l| format!("{l}\n")).collect());
                    }
                    start = None;
                }
            }
            None
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn read_from(path: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut out = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How long `report` waits for the first bytes of its report before asking again.
const ASK_AGAIN: Duration = Duration::from_secs(2);

/// What `fdguard report` was asked.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// The process id (it must run under libfdguard.so)
    pub pid: i32,
    /// Seconds to wait for the report
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// A JSON report, whatever format the process writes its own reports in
    #[arg(long)]
    pub json: bool,
    /// The signal to send, when the process's published state cannot be read (an older
    /// library, or no permission to read its memory); otherwise it must be the one it answers
    #[arg(long, value_name = "SIGNAL")]
    pub signal: Option<String>,
    /// Read the report from this file (where the process writes its reports) instead of a
    /// reply file of the command's own
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// The signal report requests go on: the one the library says it answers, checked against
/// `--signal`; or, when what it publishes cannot be read, `--signal` or its environment's.
fn request_signal(
    pid: i32,
    given: Option<&str>,
    published: &Result<View, String>,
    loaded: &Loaded,
) -> Result<i32, Failure> {
    let given = match given {
        Some(text) => match parse_signal(text) {
            Some(Some(sig)) => Some(sig),
            _ => {
                return Err(Failure::bad_input(format!(
                    "--signal {text}: not a signal fdguard can use (USR1, USR2, HUP, TERM, \
                     WINCH, RTMIN+N, RTMAX-N, ...)"
                )));
            }
        },
        None => None,
    };
    let view = match published {
        Ok(view) => view,
        Err(why) => {
            if let Some(sig) = given {
                return Ok(sig);
            }
            eprintln!(
                "fdguard: cannot read what pid {pid}'s fdguard publishes ({why}); using the \
                 FDGUARD_SIGNAL of its environment (--signal names another)"
            );
            return loaded.config.signal.ok_or_else(|| {
                Failure::bad_input(format!(
                    "pid {pid} runs with FDGUARD_SIGNAL=none: it takes no report requests; \
                     `fdguard inspect {pid}` describes its fds"
                ))
            });
        }
    };
    let answers = match view.signal {
        Signal::Answers(sig) => sig,
        Signal::NoneConfigured => {
            return Err(Failure::bad_input(format!(
                "pid {pid} runs with FDGUARD_SIGNAL=none: it takes no report requests; \
                 `fdguard inspect {pid}` describes its fds"
            )));
        }
        Signal::NoneFree => {
            return Err(Failure::bad_input(format!(
                "pid {pid} has a handler of its own on every signal fdguard could use (a Go \
                 runtime takes them all): fdguard sends it none; its threshold, EMFILE and exit \
                 reports still come where it writes reports, and `fdguard inspect {pid}` \
                 describes its fds"
            )));
        }
        Signal::NotStarted => {
            return Err(Failure::bad_input(format!(
                "fdguard is loaded in pid {pid} but not started: `fdguard attach {pid}`"
            )));
        }
    };
    match given {
        Some(sig) if sig != answers => Err(Failure::bad_input(format!(
            "pid {pid} answers report requests on {}, not {} (the program may handle that one \
             itself): fdguard sends only the signal the library says it answers",
            signals::name(answers),
            signals::name(sig)
        ))),
        _ => Ok(answers),
    }
}

/// Where the report will be read: a reply file the command made for this request, `--file`,
/// or where the process writes its reports.
enum Source {
    Reply(PathBuf),
    File(PathBuf),
}

impl Source {
    fn path(&self) -> &Path {
        match self {
            Source::Reply(p) | Source::File(p) => p,
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Reply(p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The reply file for `request`, made in the process's own `/tmp` (through its root, so in a
/// container or a service's private `/tmp` too) and given to its user; `None` if it cannot be.
fn reply_file(target: &Target, request: &Request) -> Option<Source> {
    let (uid, gid) = target.owner()?;
    let theirs = request.reply_path(target.pid as u32);
    let path = target.root().join(theirs.trim_start_matches('/'));
    os::create_owned_file(&path, uid, gid).ok()?;
    Some(Source::Reply(path))
}

/// Where the process writes its reports, as it publishes it (or, when that cannot be read, as
/// its environment says), as a file this command can read.
fn written_to(target: &Target, loaded: &Loaded, view: Option<&View>) -> Result<PathBuf, Failure> {
    let stderr = || stderr_file(target);
    let Some(view) = view else {
        return match loaded.report_template() {
            Some(template) => report_file(target, template),
            None => stderr(),
        };
    };
    match &view.destination {
        Destination::Stderr => stderr(),
        Destination::File(path) => {
            let path = PathBuf::from(String::from_utf8_lossy(path).into_owned());
            Ok(if path.is_absolute() {
                target.root().join(path.strip_prefix("/").unwrap_or(&path))
            } else {
                target.cwd().join(path)
            })
        }
        Destination::Unknown => Err(Failure::bad_input(format!(
            "pid {}'s report path is longer than fdguard publishes: name it with --file",
            target.pid
        ))),
    }
}

/// The process's stderr, if it is a file this command can read.
fn stderr_file(target: &Target) -> Result<PathBuf, Failure> {
    let stderr = PathBuf::from(format!("/proc/{}/fd/2", target.pid));
    let is_file = std::fs::metadata(&stderr).is_ok_and(|m| m.is_file());
    if is_file {
        return Ok(stderr);
    }
    let link = std::fs::read_link(&stderr).map_or_else(
        |_| "closed".to_string(),
        |l| l.to_string_lossy().into_owned(),
    );
    Err(Failure::bad_input(format!(
        "pid {} writes its reports to its stderr ({link}), which this command cannot read, and \
         no reply file could be made in its /tmp; name the file it writes to with --file, or \
         start it with `fdguard run --report PATH`",
        target.pid
    )))
}

pub fn run(args: ReportArgs) -> Outcome {
    let ReportArgs {
        pid,
        timeout,
        json,
        signal,
        file,
    } = args;
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(Failure::bad_input(
            "--timeout must be a positive number of seconds",
        ));
    }
    let target = Target::open(pid)?;
    let asking = ask(&target, json, file, signal.as_deref())?;
    print!("{}", wait_for_report(pid, asking, timeout)?);
    Ok(())
}

/// The request to a process under the library, or to the fdguard process that records it
/// from outside: the tracer of a traced one, the server of an eBPF attach.
fn ask(
    target: &Target,
    json: bool,
    file: Option<PathBuf>,
    signal: Option<&str>,
) -> Result<Asking, Failure> {
    let recorder = match (target.fdguard_tracer(), crate::ebpf::server_of(target.pid)) {
        // The tracer sets the program's environment as its options say.
        (Some(tracer), _) => Some((tracer, target.environment_config())),
        // The server of an eBPF attach has them in its own.
        (None, Some(server)) => Some((server, Target::open(server)?.environment_config())),
        (None, None) => None,
    };
    match recorder {
        Some((by, config)) => ask_tracer(target, by, &config, json, file, signal),
        None => ask_library(target, json, file, signal),
    }
}

/// A JSON report of `pid` (under the library, the tracer or an eBPF attach), asked as
/// `fdguard report PID --json` asks it, waited for at most `timeout`.
pub fn fetch_json(pid: i32, timeout: Duration) -> Result<String, Failure> {
    let target = Target::open(pid)?;
    let asking = ask(&target, true, None, None)?;
    wait_for_report(pid, asking, timeout.as_secs_f64())
}

/// A request on its way: to whom (the program, whose library answers, or the tracer of a traced
/// program), on which signal, which request, and where its report will be read.
struct Asking {
    recipient: i32,
    sig: i32,
    format: Format,
    request: Request,
    source: Source,
}

/// The request for `format`, with a reply file in the process's /tmp if one can be made (and
/// `--file` was not given), else read from `file` or from where the process writes its reports.
fn request_for(
    target: &Target,
    format: Format,
    file: Option<PathBuf>,
    written: impl FnOnce() -> Result<PathBuf, Failure>,
) -> Result<(Request, Source), Failure> {
    let nonce = os::random_u64();
    let with_reply = Request::new(format, true, nonce);
    Ok(match file {
        Some(path) => (Request::new(format, false, nonce), Source::File(path)),
        None => match reply_file(target, &with_reply) {
            Some(reply) => (with_reply, reply),
            None => (Request::new(format, false, nonce), Source::File(written()?)),
        },
    })
}

/// A traced program (`fdguard run` of a static or Go program) is asked through its tracer, and
/// a program attached to with eBPF through the fdguard process that holds the attach
/// (`tracer`, either way), which answers on `request::tracer_signal`; its format and report
/// file are those of `config`, that process's options.
fn ask_tracer(
    target: &Target,
    tracer: i32,
    config: &fdguard_core::config::Config,
    json: bool,
    file: Option<PathBuf>,
    signal: Option<&str>,
) -> Result<Asking, Failure> {
    let pid = target.pid;
    if let Some(given) = signal {
        return Err(Failure::bad_input(format!(
            "pid {pid} is traced by fdguard (pid {tracer}), which takes report requests itself:              --signal {given} does not apply"
        )));
    }
    let format = if json { Format::Json } else { config.format };
    let (request, source) = request_for(target, format, file, || match &config.report {
        ReportDest::Path(template) => report_file(target, template),
        ReportDest::Stderr => stderr_file(target),
    })?;
    Ok(Asking {
        recipient: tracer,
        sig: fdguard_core::request::tracer_signal(),
        format,
        request,
        source,
    })
}

/// A program with the library is asked on the signal the library publishes.
fn ask_library(
    target: &Target,
    json: bool,
    file: Option<PathBuf>,
    signal: Option<&str>,
) -> Result<Asking, Failure> {
    let pid = target.pid;
    let Some(loaded) = target.fdguard()? else {
        return Err(Failure::bad_input(format!(
            "pid {pid} ({}) is not running under fdguard (libfdguard.so is not loaded in it): \
             `fdguard inspect {pid}` describes its fds without it; `fdguard attach {pid}` \
             records who creates them from now on, `fdguard run -- CMD` from its start",
            target.name()
        )));
    };
    match loaded.state {
        Some(LibState::Detached) => {
            return Err(Failure::bad_input(format!(
                "fdguard was detached from pid {pid} (loaded, inert): `fdguard attach {pid}` \
                 to attach it again"
            )));
        }
        Some(LibState::Dormant) => {
            return Err(Failure::bad_input(format!(
                "fdguard is loaded in pid {pid} but not started (an attach that did not \
                 finish?): `fdguard attach {pid}`"
            )));
        }
        _ => {}
    }
    let published = loaded.mapped.published(pid);
    if published.is_err() && loaded.config.disabled {
        return Err(Failure::bad_input(format!(
            "fdguard is loaded in pid {pid} but disabled (FDGUARD_DISABLE): it makes no \
             reports; `fdguard inspect {pid}` describes its fds"
        )));
    }
    let sig = request_signal(pid, signal, &published, &loaded)?;
    let view = published.as_ref().ok();
    let format = if json {
        Format::Json
    } else {
        view.map_or(loaded.config.format, |v| v.format)
    };
    let (request, source) =
        request_for(target, format, file, || written_to(target, &loaded, view))?;
    Ok(Asking {
        recipient: pid,
        sig,
        format,
        request,
        source,
    })
}

/// Sends the request (again every `ASK_AGAIN` while nothing came) and gives the report once it
/// is complete.
fn wait_for_report(pid: i32, asking: Asking, timeout: f64) -> Result<String, Failure> {
    let Asking {
        recipient,
        sig,
        format,
        request,
        source,
    } = asking;
    let path = source.path();
    let start = file_len(path);
    let ask = || {
        os::queue_signal(recipient, sig, request.value()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                Failure::bad_input(format!(
                    "permission denied sending {} to pid {recipient}: run as its user or as \
                     root (CAP_KILL)",
                    signals::name(sig)
                ))
            } else {
                Failure::failed(format!("cannot signal pid {recipient}: {e}"))
            }
        })
    };
    ask()?;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let mut asked_at = Instant::now();
    loop {
        let written = read_from(path, start);
        if let Some(report) = find_report(&written, pid, format) {
            return Ok(report);
        }
        // Nothing yet: its report processes may all have been busy, and the wake that serves
        // a waiting request when one ends may have been lost (`fdguard_core::request`). Asked
        // again, the library still makes one report for it.
        if written.is_empty() && asked_at.elapsed() >= ASK_AGAIN {
            ask()?;
            asked_at = Instant::now();
        }
        if !os::exists(pid) {
            return Err(Failure::failed(format!(
                "pid {pid} exited before its report was written"
            )));
        }
        if Instant::now() >= deadline {
            return Err(Failure::failed(format!(
                "no report from pid {pid} in {} after {timeout} s: if fdguard could not write \
                 it, it said so on the process's stderr",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_complete_signal_report() {
        let text = "==7== fdguard: 3 of 8 fds open\n==7== reason: threshold at x\n\
                    ==7== fdguard: end of report\n\
                    ==8== fdguard: other process\n\
                    ==7== fdguard: 4 of 8 fds open\n==7== reason: signal at y\n==7==\n\
                    ==7== fdguard: end of report\n";
        let r = find_report(text, 7, Format::Text).unwrap();
        assert!(r.starts_with("==7== fdguard: 4 of 8") && r.ends_with("end of report\n"));
        assert!(r.contains("\n==7==\n"), "blank lines kept: {r}");
        assert_eq!(find_report(&text[..text.len() - 5], 7, Format::Text), None);
        let json = "{\"fdguard\":1,\"pid\":7,\"reason\":\"threshold\"}\n\
                    {\"fdguard\":1,\"pid\":7,\"event\":\"bad_close\"}\n\
                    {\"fdguard\":1,\"pid\":7,\"reason\":\"signal\",\"open\":3}\n";
        assert_eq!(
            find_report(json, 7, Format::Json).as_deref(),
            Some("{\"fdguard\":1,\"pid\":7,\"reason\":\"signal\",\"open\":3}\n")
        );
        assert_eq!(find_report(&json[..json.len() - 1], 7, Format::Json), None);
    }

    #[test]
    fn timestamps_of_report_names() {
        assert!(is_timestamp("20261122T030405Z"));
        assert!(!is_timestamp("20261122T03040Z"));
        assert!(!is_timestamp("2026112xT030405Z"));
    }
}
