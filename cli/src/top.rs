//! `fdguard top`: every process this user may read, ranked by open fds against its own soft
//! limit (or by count), with kinds, growth between samples, the ones near or at their limit and
//! the ones under fdguard marked, and the host's file handles and sockets. A screen redrawn on a
//! terminal, plain lines otherwise (for a log), or one JSON object per sample.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use fdguard_core::escape::escaped;
use fdguard_core::kind::FdKind;
use fdguard_core::report::Limit;
use fdguard_core::schema::Schema;
use serde::Serialize;

use crate::fail::{Failure, Outcome};
use crate::host::{self, FileHandles, Host, Level, Proc, Sort, Under};
use crate::os;
use crate::summary::kind_counts;
use crate::units::{count, percent, signed};
use crate::watch::Schedule;

/// Processes a text sample shows without `--top`.
const TEXT_ROWS: usize = 20;
/// Characters of a command line a text row shows.
const COMMAND_CHARS: usize = 48;

/// What `fdguard top` was asked.
#[derive(clap::Args)]
pub struct TopArgs {
    /// Rank by open fds over each process's own soft limit (ratio), or by open fds (count)
    #[arg(long, value_enum, default_value_t = Sort::Ratio)]
    pub sort: Sort,
    /// Seconds between samples (without it and --count: one sample; with --count only: 1)
    #[arg(long)]
    pub interval: Option<f64>,
    /// Stop after this many samples (with --interval only: until Ctrl-C)
    #[arg(long)]
    pub count: Option<u64>,
    /// Processes shown per sample (default: 20 in text, every process with --json)
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// One JSON object per sample: the host's figures and the processes
    #[arg(long)]
    pub json: bool,
}

/// The host's figures of a sample.
#[derive(Serialize)]
struct HostFigures {
    /// Processes read (those with an fd open).
    processes: usize,
    /// Processes whose fds this user may not read (another user's, or a protected one).
    unreadable: usize,
    file_handles: Option<FileHandles>,
    sockets: Option<SocketFigures>,
}

#[derive(Serialize)]
struct SocketFigures {
    allocated: u64,
    held: u64,
    held_by_no_fd: u64,
}

/// One process of a sample.
#[derive(Serialize)]
struct Row<'a> {
    pid: i32,
    comm: &'a str,
    cmdline: &'a [String],
    open: usize,
    limit: Limit,
    /// `open` over `limit.soft`; null without a soft limit.
    ratio: Option<f64>,
    level: Level,
    by_kind: &'a BTreeMap<FdKind, usize>,
    /// Open fds since the previous sample; null in the first, or for a process new since.
    growth: Option<i64>,
    under_fdguard: Option<Under>,
}

#[derive(Serialize)]
struct Sample<'a> {
    fdguard: Schema,
    time: String,
    /// Seconds since the previous sample; null in the first.
    interval_s: Option<f64>,
    host: HostFigures,
    processes: Vec<Row<'a>>,
}

/// The host's figures in one line: file handles, sockets against the ones fds hold.
fn host_line(h: &HostFigures) -> String {
    let mut parts = Vec::new();
    if let Some(f) = h.file_handles {
        parts.push(format!(
            "file handles {} of {} ({})",
            count(f.allocated as usize),
            count(f.max as usize),
            percent(f.allocated, f.max)
        ));
    }
    if let Some(s) = &h.sockets {
        let mut words = format!(
            "sockets {} allocated, {} held by fds",
            count(s.allocated as usize),
            count(s.held as usize)
        );
        if s.held_by_no_fd > 0 {
            words.push_str(&format!(
                ": {} sockets allocated but held by no fd",
                count(s.held_by_no_fd as usize)
            ));
        }
        parts.push(words);
    }
    parts.push(format!("{} processes read", count(h.processes)));
    if h.unreadable > 0 {
        parts.push(format!(
            "{} not readable (another user's, or protected: root with CAP_SYS_PTRACE reads them)",
            count(h.unreadable)
        ));
    }
    parts.join("; ")
}

const HEADER: &str = "    PID     OPEN      LIMIT  USED  GROWTH  MARK      FDGUARD  COMMAND";

fn row_line(r: &Row) -> String {
    let limit = r
        .limit
        .soft
        .map_or_else(|| "none".to_string(), |s| count(s as usize));
    let used = r
        .limit
        .soft
        .map_or_else(|| "-".to_string(), |s| percent(r.open as u64, s));
    let growth = r.growth.map_or_else(String::new, signed);
    let mark = match r.level {
        Level::AtLimit => "AT LIMIT",
        Level::Near => "near",
        Level::Ok => "",
    };
    let under = r.under_fdguard.map_or("", Under::name);
    let command = if r.cmdline.is_empty() {
        format!("[{}]", r.comm)
    } else {
        r.cmdline.join(" ")
    };
    let command: String = escaped(&command).chars().take(COMMAND_CHARS).collect();
    format!(
        "{:>7} {:>8} {:>10} {:>5} {:>7}  {:<9} {:<8} {:<w$}  {}",
        r.pid,
        count(r.open),
        limit,
        used,
        growth,
        mark,
        under,
        command,
        kind_counts(r.by_kind),
        w = COMMAND_CHARS
    )
}

/// Open fds by process (and its name, so that a pid taken again does not show as growth).
type Previous = HashMap<(i32, String), usize>;

fn rows<'a>(procs: &'a [Proc], previous: Option<&Previous>, shown: usize) -> Vec<Row<'a>> {
    procs
        .iter()
        .take(shown)
        .map(|p| Row {
            pid: p.pid,
            comm: &p.comm,
            cmdline: &p.cmdline,
            open: p.open,
            limit: p.limit,
            ratio: p.ratio(),
            level: p.level(),
            by_kind: &p.by_kind,
            growth: previous
                .and_then(|m| m.get(&(p.pid, p.comm.clone())))
                .map(|before| p.open as i64 - *before as i64),
            under_fdguard: p.under,
        })
        .collect()
}

/// The host's figures of a sample, as `top` shows them.
fn figures(host: &Host) -> HostFigures {
    HostFigures {
        processes: host.processes.len(),
        unreadable: host.unreadable,
        file_handles: host.file_handles,
        sockets: host.sockets.map(|s| SocketFigures {
            allocated: s.allocated,
            held: s.held,
            held_by_no_fd: s.held_by_no_fd(),
        }),
    }
}

/// What `--interval` and `--count` ask for: seconds between samples, and how many (`None`:
/// until interrupted).
fn schedule(interval: Option<f64>, samples: Option<u64>) -> Result<(f64, Option<u64>), Failure> {
    if let Some(s) = interval
        && !(s.is_finite() && s >= 0.1)
    {
        return Err(Failure::bad_input(
            "--interval must be a number of seconds, at least 0.1",
        ));
    }
    if samples == Some(0) {
        return Err(Failure::bad_input("--count must be at least 1"));
    }
    Ok(match (interval, samples) {
        (None, None) => (1.0, Some(1)),
        (i, n) => (i.unwrap_or(1.0), n),
    })
}

pub fn run(args: TopArgs) -> Outcome {
    let (interval_s, samples) = schedule(args.interval, args.count)?;
    if args.top == Some(0) {
        return Err(Failure::bad_input("--top must be at least 1"));
    }
    let live = !args.json && os::stdout_is_terminal();
    let shown = args
        .top
        .unwrap_or(if args.json { usize::MAX } else { TEXT_ROWS });
    let mut previous: Option<(Instant, Previous)> = None;
    let mut schedule = Schedule::new(interval_s, samples);
    loop {
        let tick = Instant::now();
        let mut host = host::collect();
        host::rank(&mut host.processes, args.sort);
        let sample = Sample {
            fdguard: Schema,
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            interval_s: previous
                .as_ref()
                .map(|(t, _)| tick.duration_since(*t).as_secs_f64()),
            host: figures(&host),
            processes: rows(&host.processes, previous.as_ref().map(|(_, m)| m), shown),
        };
        if args.json {
            println!("{}", serde_json::to_string(&sample).expect("serializable"));
        } else {
            let mut out = String::new();
            if live {
                // Home and clear: the screen is redrawn with each sample.
                out.push_str("\x1b[H\x1b[2J");
            } else if previous.is_some() {
                out.push('\n');
            }
            out.push_str(&format!(
                "{}  {}\n{HEADER}\n",
                sample.time,
                host_line(&sample.host)
            ));
            for r in &sample.processes {
                out.push_str(&row_line(r));
                out.push('\n');
            }
            if live && !schedule.is_last() {
                out.push_str(&format!("every {interval_s}s; Ctrl-C stops\n"));
            }
            print!("{out}");
        }
        let seen = host
            .processes
            .iter()
            .map(|p| ((p.pid, p.comm.clone()), p.open))
            .collect();
        previous = Some((tick, seen));
        if !schedule.wait_next(tick) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tests::proc;

    #[test]
    fn schedules() {
        assert_eq!(schedule(None, None).unwrap(), (1.0, Some(1)));
        assert_eq!(schedule(Some(0.5), None).unwrap(), (0.5, None));
        assert_eq!(schedule(None, Some(3)).unwrap(), (1.0, Some(3)));
        assert!(schedule(Some(0.0), None).is_err());
        assert!(schedule(Some(f64::NAN), None).is_err());
        assert!(schedule(None, Some(0)).is_err());
    }

    #[test]
    fn rows_show_growth_marks_and_the_host() {
        let mut at = proc(7, 1024, Some(1024));
        at.by_kind.insert(FdKind::Socket, 1000);
        at.by_kind.insert(FdKind::File, 24);
        at.under = Some(Under::Library);
        at.cmdline = vec!["./server".into(), "--port".into(), "80".into()];
        let procs = [at, proc(8, 10, None)];
        let before: Previous = [((7, "p7".to_string()), 1000)].into_iter().collect();
        let rs = rows(&procs, Some(&before), 10);
        assert_eq!(rs[0].growth, Some(24));
        assert_eq!(rs[1].growth, None);
        let line = row_line(&rs[0]);
        assert!(line.contains("AT LIMIT"), "{line}");
        assert!(line.contains(" library "), "{line}");
        assert!(line.ends_with("socket 1,000, file 24"), "{line}");
        assert!(line.contains("./server --port 80"), "{line}");
        assert!(row_line(&rs[1]).contains("[p8]"));
        let h = HostFigures {
            processes: 2,
            unreadable: 0,
            file_handles: Some(FileHandles {
                allocated: 1034,
                max: 100_000,
            }),
            sockets: Some(SocketFigures {
                allocated: 1500,
                held: 1000,
                held_by_no_fd: 500,
            }),
        };
        assert_eq!(
            host_line(&h),
            "file handles 1,034 of 100,000 (1%); sockets 1,500 allocated, 1,000 held by fds: \
             500 sockets allocated but held by no fd; 2 processes read"
        );
    }
}
