//! `fdguard`: the command for the engineer who has a PID of a process running out of fds.
//!
//! `inspect`, `watch` and `limits` read any process from `/proc` (no preload, so Go and static
//! binaries too); `top` and `metrics` every process of the host at once; `run` starts a program
//! under `libfdguard.so` (or its own tracer, for static and Go programs); `report` asks a
//! process running under it for a report; `diff` and `flamegraph` read reports.
//!
//! Layers: `main` (arguments) → one module per subcommand → `target`, `fds`, `summary`,
//! `reports`, `host` (the process, its fds, how they add up, report files; every process of
//! the host) → `net`, `units` (pure) and
//! `os` (the only `unsafe`). What the library means the same way (the `FDGUARD_*` variables,
//! fd kinds, socket descriptions, program detection, the report and snapshot schema) comes
//! from `fdguard_core`.
#![deny(unsafe_code)]

mod attach;
mod diff;
mod ebpf;
mod fail;
mod fds;
mod flame;
mod host;
mod hostproc;
mod inspect;
mod limits;
mod metrics;
mod net;
mod os;
mod ptrace;
mod report;
mod reports;
mod run;
mod summary;
mod tally;
mod target;
mod top;
mod trace;
mod units;
mod watch;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Find and survive file-descriptor exhaustion ("Too many open files").
#[derive(Parser)]
#[command(name = "fdguard", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every open fd of a running process, what it is and where it points, against the
    /// process's own limit (no preload: works on any process you may read, Go and static too)
    Inspect {
        /// The process id
        pid: i32,
        /// One JSON object with the report's keys (fds[].fd, kind, desc, limit, by_kind, ...)
        #[arg(long)]
        json: bool,
        /// List every fd in text (the first 50 otherwise)
        #[arg(long)]
        all: bool,
    },
    /// A process's fd limit and where it comes from: the ancestors that set it, its systemd
    /// unit, supervisord, a container, a runtime that raises its own; the risks of the value
    /// and how to change it now and for the next start
    Limits {
        /// The process id
        pid: i32,
        /// One JSON object: limit, chain (the process first), origin, unit, notes, fix, ...
        #[arg(long)]
        json: bool,
    },
    /// Run a program under libfdguard.so (found next to this command, or at $FDGUARD_LIB)
    Run(run::RunArgs),
    /// Ask a process running under fdguard for a report and print it once it is written
    Report(report::ReportArgs),
    /// What grew between two JSON reports (or inspect --json snapshots): stacks, kinds, TCP
    /// states, largest growth first
    Diff {
        /// The older report (a file of JSON reports stands for its last one)
        old: PathBuf,
        /// The newer report
        new: PathBuf,
        /// The difference as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Who holds the fds, as a flame graph (SVG on stdout; width = fds, outermost frame at
    /// the bottom)
    Flamegraph {
        /// A JSON report, or an inspect --json snapshot
        report: PathBuf,
        /// Folded stacks ("main;serve;open_file 812") instead of SVG, for other tools
        #[arg(long)]
        folded: bool,
        /// The graph's title
        #[arg(long)]
        title: Option<String>,
    },
    /// Load fdguard into a running process (ptrace, no restart) and stop its EMFILE spin
    Attach(attach::AttachArgs),
    /// Take fdguard out of a process it was attached to (the library stays loaded, inert)
    Detach(attach::DetachArgs),
    /// A process's fd count over time against its limit, by kind, with the growth rate and
    /// the time left until EMFILE at that rate
    Watch {
        /// The process id
        pid: i32,
        /// Seconds between samples
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many samples (default: until the process exits or Ctrl-C)
        #[arg(long)]
        count: Option<u64>,
        /// One JSON object per sample
        #[arg(long)]
        json: bool,
    },
    /// Every process you may read, ranked by open fds against its own limit, with kinds,
    /// growth between samples, and the host's file handles and sockets
    Top(top::TopArgs),
    /// Prometheus/OpenMetrics text of the processes closest to their limit and the host's
    /// figures: for node_exporter's textfile collector, or served over HTTP
    Metrics(metrics::MetricsArgs),
    /// The process that holds an eBPF attach (started by `attach`, ended by `detach`)
    #[command(name = "ebpf-serve", hide = true)]
    EbpfServe {
        /// The process attached to
        pid: i32,
        /// It has not started yet (`run --ebpf`): the fds it has are inherited
        #[arg(long)]
        from_start: bool,
    },
    /// The child of `run --ebpf`: stops itself until the recorder is attached, then executes
    /// the program
    #[command(name = "ebpf-exec", hide = true)]
    EbpfExec {
        /// The program's file
        path: PathBuf,
        /// Its argv
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<std::ffi::OsString>,
    },
}

/// Ends on arguments clap refused: in one line, as every other refusal (clap's own message
/// adds the usage and a hint over several), exit status 2. Help and version asked for, and
/// help shown for a missing subcommand, are clap's as they are.
fn refuse_arguments(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if !e.use_stderr() || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        e.exit();
    }
    let text = e.render().to_string();
    // The message is its first paragraph (a missing argument's name is on a line of its
    // own); the usage line names the subcommand whose --help tells more.
    let message: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    let command = text
        .lines()
        .find_map(|l| l.strip_prefix("Usage: "))
        .map(|usage| {
            let words: Vec<&str> = usage.split_whitespace().take(2).collect();
            match words[..] {
                [name, sub] if !sub.starts_with(['[', '<', '-']) => format!("{name} {sub}"),
                _ => "fdguard".to_string(),
            }
        })
        .unwrap_or_else(|| "fdguard".to_string());
    eprintln!(
        "fdguard: {} ({command} --help)",
        fdguard_core::escape::escaped(message)
    );
    std::process::exit(fail::BAD_INPUT);
}

fn main() {
    os::default_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => refuse_arguments(e),
    };
    let outcome = match cli.command {
        Command::Inspect { pid, json, all } => inspect::run(pid, json, all),
        Command::Limits { pid, json } => limits::run(pid, json),
        Command::Run(args) => run::run(args),
        Command::Attach(args) => attach::attach(args),
        Command::Detach(args) => attach::detach(args),
        Command::Report(args) => report::run(args),
        Command::Diff { old, new, json } => diff::run(&old, &new, json),
        Command::Flamegraph {
            report,
            folded,
            title,
        } => flame::run(&report, folded, title),
        Command::Watch {
            pid,
            interval,
            count,
            json,
        } => watch::run(pid, interval, count, json),
        Command::Top(args) => top::run(args),
        Command::Metrics(args) => metrics::run(args),
        Command::EbpfServe { pid, from_start } => ebpf::serve(pid, from_start),
        Command::EbpfExec { path, argv } => ebpf::exec(&path, &argv),
    };
    if let Err(f) = outcome {
        // One line, whatever a name in it holds (see `fdguard_core::escape`).
        eprintln!("fdguard: {}", fdguard_core::escape::escaped(&f.message));
        std::process::exit(f.code);
    }
}
