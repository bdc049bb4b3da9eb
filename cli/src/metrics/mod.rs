//! `fdguard metrics`: the host's fd figures as Prometheus text (exposition format 0.0.4, which
//! node_exporter's textfile collector and every Prometheus scrape read), for the processes
//! closest to their limit only: per process series are the top N by open fds over the soft
//! limit, and the worst ratio of every process is one series, so that a host of thousands of
//! processes stays a few dozen series (process-exporter's `worst_fd_ratio`, for the same
//! reason: a sum hides the one process that is about to fail).
//!
//! For the processes of the top N that run under fdguard, the fds held by their largest
//! creation stacks (`stacks`).
//!
//! Printed on stdout, written to a file atomically (`--textfile`), or served over HTTP
//! (`--listen`: GET /metrics, one connection at a time, each bounded in size and time).

mod stacks;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fail::{Failure, Outcome};
use crate::host::{self, Host, Level, Sort};
use stacks::Stacks;

/// What `fdguard metrics` was asked.
#[derive(clap::Args)]
pub struct MetricsArgs {
    /// Per process series for this many processes, the closest to their soft limit
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Write the metrics to this file (for node_exporter's textfile collector: a name ending
    /// in .prom), atomically: a temporary file in the same directory, renamed over it
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<PathBuf>,
    /// Serve the metrics over HTTP at this address (GET /metrics), e.g. 127.0.0.1:9999
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// For each of the top N processes that runs under fdguard, series for this many of its
    /// creation stacks, those holding the most fds (0: none; each asks the process a report)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub stacks: usize,
    /// With --listen: ask a process for its stacks at most once in this many seconds, and
    /// give the last ones in between
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub stacks_every: f64,
}

/// A request larger than this is refused: a scrape's is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one connection may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A label value, escaped as the exposition format wants (backslash, quote, newline).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample's labels, as name and value.
type Labels<'a> = Vec<(&'a str, &'a str)>;

/// One metric family (every one is a gauge): its HELP and TYPE lines, then its samples.
fn family<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, f64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = write!(out, "{{{}}}", pairs.join(","));
        }
        let value = if value.is_infinite() {
            "+Inf".to_string()
        } else {
            value.to_string()
        };
        let _ = writeln!(out, " {value}");
    }
}

/// The exposition of `host`, whose processes are ranked by ratio: per process series for the
/// first `top` (and the stacks `held` knows of them), host-wide series for every process read.
pub fn exposition(host: &Host, top: usize, held: &Stacks) -> String {
    let mut out = String::new();
    let shown = &host.processes[..top.min(host.processes.len())];
    let pids: Vec<String> = shown.iter().map(|p| p.pid.to_string()).collect();
    // Each process of the top N with its labels.
    let each = || {
        shown
            .iter()
            .zip(&pids)
            .map(|(p, pid)| (p, vec![("pid", pid.as_str()), ("comm", p.comm.as_str())]))
    };
    let infinite = |v: Option<u64>| v.map_or(f64::INFINITY, |v| v as f64);
    family(
        &mut out,
        "fdguard_process_open_fds",
        "Open file descriptors of the process (the top N processes by open fds over their soft limit).",
        each().map(|(p, l)| (l, p.open as f64)),
    );
    family(
        &mut out,
        "fdguard_process_max_fds",
        "Soft RLIMIT_NOFILE of the process: where its new fds fail with EMFILE (+Inf: none).",
        each().map(|(p, l)| (l, infinite(p.limit.soft))),
    );
    family(
        &mut out,
        "fdguard_process_hard_max_fds",
        "Hard RLIMIT_NOFILE of the process: how far its soft limit can be raised without privilege (+Inf: none).",
        each().map(|(p, l)| (l, infinite(p.limit.hard))),
    );
    family(
        &mut out,
        "fdguard_process_fd_ratio",
        "Open file descriptors of the process over its soft limit (0 without one).",
        each().map(|(p, l)| (l, p.ratio().unwrap_or(0.0))),
    );
    family(
        &mut out,
        "fdguard_process_open_fds_by_kind",
        "Open file descriptors of the process by kind (file, socket, pipe, ...).",
        each().flat_map(|(p, l)| {
            p.by_kind.iter().map(move |(kind, n)| {
                let mut l = l.clone();
                l.push(("kind", kind.name()));
                (l, *n as f64)
            })
        }),
    );
    family(
        &mut out,
        "fdguard_process_under_fdguard",
        "1 for a process of the top N that runs under fdguard: with its library (how=\"library\"), its tracer (how=\"tracer\") or attached through eBPF (how=\"ebpf\"); `fdguard report PID` names the code holding its fds.",
        each().filter_map(|(p, mut l)| {
            l.push(("how", p.under?.name()));
            Some((l, 1.0))
        }),
    );
    let now = std::time::Instant::now();
    let with_stacks = || each().filter_map(|(p, l)| Some((held.of(p.pid)?, l)));
    family(
        &mut out,
        "fdguard_process_stack_open_fds",
        "Open file descriptors of a process under fdguard that one creation stack made, for its stacks holding the most (stack: the stack's innermost frames, callee first).",
        with_stacks().flat_map(|(h, l)| {
            h.stacks.iter().map(move |s| {
                let mut l = l.clone();
                l.push(("stack", s.stack.as_str()));
                (l, s.open as f64)
            })
        }),
    );
    family(
        &mut out,
        "fdguard_process_stack_report_age_seconds",
        "Seconds since the report that the process's fdguard_process_stack_open_fds series come from was made.",
        with_stacks().map(|(h, l)| (l, now.duration_since(h.taken).as_secs_f64())),
    );
    let at = |level: Level| host.processes.iter().filter(|p| p.level() == level).count() as f64;
    let worst = host
        .processes
        .iter()
        .filter_map(host::Proc::ratio)
        .fold(0.0, f64::max);
    let mut gauges = vec![
        (
            "fdguard_host_worst_fd_ratio",
            "The highest open file descriptors over soft limit of any process read.",
            worst,
        ),
        (
            "fdguard_host_processes_near_fd_limit",
            "Processes with 80% of their soft limit open or more, not yet all of it.",
            at(Level::Near),
        ),
        (
            "fdguard_host_processes_at_fd_limit",
            "Processes with every fd of their soft limit open: their new fds fail with EMFILE.",
            at(Level::AtLimit),
        ),
        (
            "fdguard_host_processes_read",
            "Processes read (those with an fd open).",
            host.processes.len() as f64,
        ),
        (
            "fdguard_host_processes_unreadable",
            "Processes whose fds this user may not read (another user's or a protected one; root with CAP_SYS_PTRACE reads them).",
            host.unreadable as f64,
        ),
    ];
    if let Some(h) = host.file_handles {
        gauges.extend([
            (
                "fdguard_host_file_handles_allocated",
                "File handles the kernel has allocated, host-wide (/proc/sys/fs/file-nr).",
                h.allocated as f64,
            ),
            (
                "fdguard_host_file_handles_max",
                "The kernel's limit on file handles, host-wide (fs.file-max).",
                h.max as f64,
            ),
        ]);
    }
    if let Some(s) = host.sockets {
        gauges.extend([
            (
                "fdguard_host_sockets_allocated",
                "Sockets allocated in this network namespace (/proc/net/sockstat).",
                s.allocated as f64,
            ),
            (
                "fdguard_host_sockets_held",
                "Distinct sockets held by an fd of a process read, in this network namespace.",
                s.held as f64,
            ),
            (
                "fdguard_host_sockets_held_by_no_fd",
                "Sockets allocated but held by no fd of a process read: closed but kept by the kernel, or another user's.",
                s.held_by_no_fd() as f64,
            ),
        ]);
    }
    for (name, help, value) in gauges {
        family(&mut out, name, help, [(Vec::new(), value)]);
    }
    out
}

/// A fresh sample of the host, as the exposition; the stacks of its top processes under
/// fdguard asked as `held` says.
fn sample(top: usize, held: &mut Stacks) -> String {
    let mut host = host::collect();
    host::rank(&mut host.processes, Sort::Ratio);
    held.refresh(&host.processes[..top.min(host.processes.len())]);
    exposition(&host, top, held)
}

/// Writes `text` to `path` so that a reader sees the old file or the new one, whole: a
/// temporary file in the same directory (a name node_exporter's collector skips, not ending
/// in `.prom`), renamed over it.
fn write_atomically(path: &Path, text: &str) -> Outcome {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        Failure::bad_input(format!("--textfile {}: not a file name", path.display()))
    })?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let failed = |e: std::io::Error| {
        let _ = std::fs::remove_file(&temp);
        Failure::failed(format!("cannot write {}: {e}", path.display()))
    };
    let mut f = std::fs::File::create(&temp).map_err(failed)?;
    f.write_all(text.as_bytes()).map_err(failed)?;
    f.sync_all().map_err(failed)?;
    std::fs::rename(&temp, path).map_err(failed)
}

/// The answer to one request: `GET /metrics` gets a fresh sample.
fn answer(conn: &mut TcpStream, top: usize, held: &mut Stacks) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = request.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (status, kind, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            sample(top, held),
        ),
        (Some("GET"), _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "fdguard serves /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET /metrics\n".to_string(),
        ),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// Serves scrapes until killed, one connection at a time (a scrape takes milliseconds; a
/// client that stalls is cut off after `IO_TIMEOUT`).
fn serve(addr: &str, top: usize, mut held: Stacks) -> Outcome {
    let listener = TcpListener::bind(addr)
        .map_err(|e| Failure::bad_input(format!("--listen {addr}: cannot listen there: {e}")))?;
    let bound = listener
        .local_addr()
        .map_or_else(|_| addr.to_string(), |a| a.to_string());
    eprintln!("fdguard: serving metrics on http://{bound}/metrics");
    loop {
        match listener.accept() {
            // A client that went away, or one too slow, costs only its own answer.
            Ok((mut conn, _)) => {
                let _ = answer(&mut conn, top, &mut held);
            }
            // Out of fds or memory: wait rather than spin on a listener that stays ready.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub fn run(args: MetricsArgs) -> Outcome {
    if args.top == 0 {
        return Err(Failure::bad_input("--top must be at least 1"));
    }
    if !(args.stacks_every.is_finite() && args.stacks_every >= 0.0) {
        return Err(Failure::bad_input(
            "--stacks-every must be a number of seconds, 0 or more",
        ));
    }
    let mut held = Stacks::new(args.stacks, Duration::from_secs_f64(args.stacks_every));
    if args.textfile.is_some() && args.listen.is_some() {
        return Err(Failure::bad_input(
            "--textfile and --listen are two ways to publish: give one",
        ));
    }
    if let Some(addr) = &args.listen {
        return serve(addr, args.top, held);
    }
    let text = sample(args.top, &mut held);
    match &args.textfile {
        Some(path) => write_atomically(path, &text),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tests::proc;
    use crate::host::{FileHandles, Sockets, Under};
    use fdguard_core::kind::FdKind;

    #[test]
    fn families_and_labels() {
        let mut a = proc(7, 900, Some(1000));
        a.comm = "we\"ird\\na\nme".into();
        a.by_kind.insert(FdKind::Socket, 899);
        a.by_kind.insert(FdKind::File, 1);
        a.under = Some(Under::Library);
        let host = Host {
            processes: vec![a, proc(8, 1000, Some(1000)), proc(9, 5, None)],
            unreadable: 2,
            file_handles: Some(FileHandles {
                allocated: 1905,
                max: 100_000,
            }),
            sockets: Some(Sockets {
                allocated: 1000,
                held: 899,
            }),
        };
        let none = Stacks::new(0, Duration::ZERO);
        let text = exposition(&host, 1, &none);
        let lines: Vec<&str> = text.lines().collect();
        let id = r#"pid="7",comm="we\"ird\\na\nme""#;
        assert!(lines.contains(&format!("fdguard_process_open_fds{{{id}}} 900").as_str()));
        assert!(lines.contains(&format!("fdguard_process_max_fds{{{id}}} 1000").as_str()));
        assert!(lines.contains(&format!("fdguard_process_fd_ratio{{{id}}} 0.9").as_str()));
        assert!(lines.contains(
            &format!("fdguard_process_open_fds_by_kind{{{id},kind=\"socket\"}} 899").as_str()
        ));
        assert!(lines.contains(
            &format!("fdguard_process_under_fdguard{{{id},how=\"library\"}} 1").as_str()
        ));
        // Only the top 1 per process; the worst ratio and the counts over all of them.
        assert!(!text.contains("pid=\"8\""));
        assert!(lines.contains(&"fdguard_host_worst_fd_ratio 1"));
        assert!(lines.contains(&"fdguard_host_processes_at_fd_limit 1"));
        assert!(lines.contains(&"fdguard_host_processes_near_fd_limit 1"));
        assert!(lines.contains(&"fdguard_host_sockets_held_by_no_fd 101"));
        assert!(lines.contains(&"fdguard_host_file_handles_allocated 1905"));
        // Every family has HELP and TYPE before its samples.
        let helps = lines.iter().filter(|l| l.starts_with("# HELP ")).count();
        let types = lines.iter().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!((helps, types), (18, 18));
        let no_limit = exposition(&host, 3, &none);
        assert!(no_limit.contains("fdguard_process_max_fds{pid=\"9\",comm=\"p9\"} +Inf"));
    }
}
