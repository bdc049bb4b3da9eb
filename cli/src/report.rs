//! `fdguard report PID`: asks a process running under fdguard for a report (with the signal it
//! was configured with, read from its environment) and prints the report once it is complete,
//! from wherever the process writes reports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fail::{Failure, Outcome};
use crate::os;
use crate::target::{LibState, Loaded, Target};
use fdguard_core::config::{Format, expand_report_path};

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
            "pid {} writes reports to {shown}, but no such file exists (fdguard creates it \
             when it loads; was it removed?)",
            target.pid
        ))
    })
}

/// Where the process's reports go, as a file this command can read.
fn destination(target: &Target, loaded: &Loaded) -> Result<PathBuf, Failure> {
    if let Some(template) = loaded.report_template() {
        return report_file(target, template);
    }
    // Reports go to stderr: readable here only if that is a regular file.
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
        "pid {} writes its reports to its stderr ({link}), which this command cannot read; \
         start it with `fdguard run --report PATH` (FDGUARD_REPORT), or attach with \
         `--report PATH`, to use `fdguard report`, \
         or send the signal yourself and read its stderr",
        target.pid
    )))
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
            let prefix = format!("=={pid}== ");
            let mine: Vec<&str> = complete
                .lines()
                .filter(|l| l.starts_with(&prefix))
                .collect();
            let mut start = None;
            for (i, line) in mine.iter().enumerate() {
                let body = &line[prefix.len()..];
                if body.starts_with("fdguard: ") && body != "fdguard: end of report" {
                    start = Some(i);
                } else if body == "fdguard: end of report" {
                    let block = &mine[start?..=i];
                    if block
                        .iter()
                        .any(|l| l[prefix.len()..].starts_with("reason: signal"))
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

fn signal_name(sig: i32) -> String {
    let (rtmin, rtmax) = os::realtime_signals();
    match sig {
        libc::SIGUSR1 => "SIGUSR1".into(),
        libc::SIGUSR2 => "SIGUSR2".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGTERM => "SIGTERM".into(),
        n if (rtmin..=rtmax).contains(&n) => format!("SIGRTMIN+{}", n - rtmin),
        n => format!("signal {n}"),
    }
}

pub fn run(pid: i32, timeout_s: f64, want_json: bool) -> Outcome {
    if !(timeout_s.is_finite() && timeout_s > 0.0) {
        return Err(Failure::bad_input(
            "--timeout must be a positive number of seconds",
        ));
    }
    let target = Target::open(pid)?;
    let Some(loaded) = target.fdguard()? else {
        return Err(Failure::bad_input(format!(
            "pid {pid} ({}) is not running under fdguard (libfdguard.so is not loaded in it): \
             `fdguard inspect {pid}` describes its fds without it; start it with `fdguard run \
             -- CMD` to learn who creates them",
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
    if loaded.config.disabled {
        return Err(Failure::bad_input(format!(
            "fdguard is loaded in pid {pid} but disabled (FDGUARD_DISABLE): it makes no \
             reports; `fdguard inspect {pid}` describes its fds"
        )));
    }
    let Some(sig) = loaded.config.signal else {
        return Err(Failure::bad_input(format!(
            "pid {pid} runs with FDGUARD_SIGNAL=none: it takes no report requests; \
             `fdguard inspect {pid}` describes its fds"
        )));
    };
    if want_json && loaded.config.format != Format::Json {
        return Err(Failure::bad_input(format!(
            "pid {pid} writes text reports: --json needs a process started with `fdguard run \
             --json` (FDGUARD_FORMAT=json)"
        )));
    }
    let path = destination(&target, &loaded)?;
    let start = file_len(&path);
    os::send_signal(pid, sig).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Failure::bad_input(format!(
                "permission denied sending {} to pid {pid}: run as its user or as root \
                 (CAP_KILL)",
                signal_name(sig)
            ))
        } else {
            Failure::failed(format!("cannot signal pid {pid}: {e}"))
        }
    })?;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_s);
    loop {
        if let Some(report) = find_report(&read_from(&path, start), pid, loaded.config.format) {
            print!("{report}");
            return Ok(());
        }
        if !os::exists(pid) {
            return Err(Failure::failed(format!(
                "pid {pid} exited before its report was written (if it installed its own \
                 {} handler, fdguard's is gone: start it with --signal to pick another)",
                signal_name(sig)
            )));
        }
        if Instant::now() >= deadline {
            return Err(Failure::failed(format!(
                "no report from pid {pid} in {} after {timeout_s} s: if the program installed \
                 its own {} handler, fdguard's is gone (start it with --signal to pick another); \
                 if fdguard could not write the file, it said so on the process's stderr",
                path.display(),
                signal_name(sig)
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
                    ==7== fdguard: 4 of 8 fds open\n==7== reason: signal at y\n\
                    ==7== fdguard: end of report\n";
        let r = find_report(text, 7, Format::Text).unwrap();
        assert!(r.starts_with("==7== fdguard: 4 of 8") && r.ends_with("end of report\n"));
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
