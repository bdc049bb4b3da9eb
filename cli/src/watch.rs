//! `fdguard watch PID`: the fd count over time against the process's limit, by kind and TCP
//! state, with the growth rate and how long until EMFILE at that rate. A live line on a
//! terminal, one plain line per sample otherwise (for logs), or JSON lines.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use fdguard_core::escape::escaped;
use fdguard_core::kind::FdKind;
use fdguard_core::report::{Limit, Word};
use fdguard_core::schema::Schema;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::fail::{Failure, Outcome};
use crate::fds::read_fds;
use crate::os::{self, FdDir};
use crate::summary::{kind_counts, summarize};
use crate::target::Target;
use crate::units::{count, duration, percent};

/// The growth rate is fitted over this much of the recent past.
const RATE_WINDOW_S: f64 = 300.0;

/// Open fds over time, and the rate they grow at.
#[derive(Default)]
pub struct Trend {
    samples: VecDeque<(f64, f64)>,
}

impl Trend {
    pub fn add(&mut self, t_s: f64, open: usize) {
        self.samples.push_back((t_s, open as f64));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| t_s - t > RATE_WINDOW_S)
        {
            self.samples.pop_front();
        }
    }

    /// fds per minute: the least-squares slope over the window; `None` with one sample.
    pub fn per_minute(&self) -> Option<f64> {
        let n = self.samples.len() as f64;
        if n < 2.0 {
            return None;
        }
        let mt = self.samples.iter().map(|s| s.0).sum::<f64>() / n;
        let mv = self.samples.iter().map(|s| s.1).sum::<f64>() / n;
        let cov: f64 = self.samples.iter().map(|(t, v)| (t - mt) * (v - mv)).sum();
        let var: f64 = self.samples.iter().map(|(t, _)| (t - mt) * (t - mt)).sum();
        (var > 0.0).then(|| cov / var * 60.0)
    }
}

/// Samples every `interval_s` seconds, `count` of them (`None`: until interrupted), for
/// `watch` and `top`.
pub struct Schedule {
    interval_s: f64,
    count: Option<u64>,
    taken: u64,
}

impl Schedule {
    pub fn new(interval_s: f64, count: Option<u64>) -> Schedule {
        Schedule {
            interval_s,
            count,
            taken: 0,
        }
    }

    /// True while the last sample is being taken.
    pub fn is_last(&self) -> bool {
        self.count.is_some_and(|c| self.taken + 1 >= c)
    }

    /// After the sample that started at `tick`: false once it was the last, else sleeps until
    /// the next one is due (counted from the start of this one, so the pace does not drift).
    pub fn wait_next(&mut self, tick: Instant) -> bool {
        self.taken += 1;
        if self.count.is_some_and(|c| self.taken >= c) {
            return false;
        }
        let next = tick + Duration::from_secs_f64(self.interval_s);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        true
    }
}

/// Seconds until `open` reaches `soft` at `per_minute`; `None` if it is not growing.
pub fn time_to_limit(open: usize, soft: Option<u64>, per_minute: Option<f64>) -> Option<f64> {
    let (soft, rate) = (soft?, per_minute?);
    if rate <= 0.0 || !rate.is_finite() {
        return None;
    }
    Some(soft.saturating_sub(open as u64) as f64 / rate * 60.0)
}

#[derive(Serialize)]
struct Sample {
    fdguard: Schema,
    pid: i32,
    time: String,
    open: usize,
    limit: Limit,
    by_kind: BTreeMap<FdKind, usize>,
    tcp_states: BTreeMap<Word, usize>,
    /// Growth in fds per minute over the last five minutes of samples.
    per_minute: Option<f64>,
    /// Seconds until the soft limit at that rate.
    emfile_in_s: Option<f64>,
}

fn sample_line(s: &Sample) -> String {
    let mut line = match s.limit.soft {
        Some(soft) => format!(
            "{}/{} fds ({})",
            count(s.open),
            count(soft as usize),
            percent(s.open as u64, soft)
        ),
        None => format!("{} fds (no limit)", count(s.open)),
    };
    match (s.per_minute, s.emfile_in_s) {
        (_, _) if s.limit.soft.is_some_and(|l| s.open as u64 >= l) => {
            line.push_str("  AT THE LIMIT: new fds fail with EMFILE")
        }
        (Some(r), Some(eta)) => {
            line.push_str(&format!("  {r:+.1} fds/min, EMFILE in ~{}", duration(eta)))
        }
        (Some(r), None) if r.abs() < 0.05 => line.push_str("  steady"),
        (Some(r), None) => line.push_str(&format!("  {r:+.1} fds/min")),
        (None, _) => {}
    }
    line.push_str(&format!("  | {}", kind_counts(&s.by_kind)));
    if !s.tcp_states.is_empty() {
        let states: Vec<String> = s
            .tcp_states
            .iter()
            .map(|(k, n)| format!("{k} {}", count(*n)))
            .collect();
        line.push_str(&format!(" | {}", states.join(", ")));
    }
    line
}

enum Output {
    Live(ProgressBar),
    Log,
    Json,
}

pub fn run(pid: i32, interval_s: f64, samples: Option<u64>, json: bool) -> Outcome {
    if !(interval_s.is_finite() && interval_s >= 0.01) {
        return Err(Failure::bad_input(
            "--interval must be a number of seconds, at least 0.01",
        ));
    }
    if samples == Some(0) {
        return Err(Failure::bad_input("--count must be at least 1"));
    }
    let target = Target::open(pid)?;
    let dir = FdDir::open(pid)?;
    let output = if json {
        Output::Json
    } else if os::stdout_is_terminal() {
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:24}] {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("pid {pid}"));
        Output::Live(bar)
    } else {
        Output::Log
    };
    if !matches!(output, Output::Json) {
        // The samples are fdguard's words and numbers; the name is the process's.
        println!(
            "watching pid {pid} ({}) every {}s{}",
            escaped(&target.name()),
            interval_s,
            if samples.is_none() {
                "; Ctrl-C stops"
            } else {
                ""
            }
        );
    }
    let started = Instant::now();
    let mut trend = Trend::default();
    let mut schedule = Schedule::new(interval_s, samples);
    loop {
        let tick = Instant::now();
        let read = read_fds(&target.process, &dir).and_then(|fds| Ok((fds, target.limit()?)));
        // A sample read while the process exits may have any number of its fds: it ends the
        // watch instead of being shown, as a failed read does then.
        if target.has_exited() {
            if let Output::Live(bar) = &output {
                bar.finish();
            }
            eprintln!("fdguard: pid {pid} exited");
            return Ok(());
        }
        let (fds, limit) = read?;
        let sum = summarize(&fds);
        trend.add(started.elapsed().as_secs_f64(), fds.len());
        let per_minute = trend.per_minute();
        let s = Sample {
            fdguard: Schema,
            pid,
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            open: fds.len(),
            limit,
            by_kind: sum.by_kind,
            tcp_states: sum.tcp_states,
            per_minute,
            emfile_in_s: time_to_limit(fds.len(), limit.soft, per_minute),
        };
        match &output {
            Output::Json => println!("{}", serde_json::to_string(&s).expect("serializable")),
            Output::Log => println!("{}  {}", s.time, sample_line(&s)),
            Output::Live(bar) => {
                bar.set_length(limit.soft.unwrap_or(s.open as u64).max(1));
                bar.set_position(s.open as u64);
                bar.set_message(sample_line(&s));
            }
        }
        if !schedule.wait_next(tick) {
            if let Output::Live(bar) = &output {
                bar.finish();
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_time_to_the_limit() {
        let mut t = Trend::default();
        assert_eq!(t.per_minute(), None);
        for i in 0..10 {
            t.add(i as f64 * 6.0, 100 + i * 2); // 2 fds per 6 s = 20 per minute
        }
        let r = t.per_minute().unwrap();
        assert!((r - 20.0).abs() < 1e-9, "{r}");
        assert_eq!(time_to_limit(1000, Some(1024), Some(12.0)), Some(120.0));
        assert_eq!(time_to_limit(1000, Some(1024), Some(-1.0)), None);
        assert_eq!(time_to_limit(1000, None, Some(1.0)), None);
        // Old samples leave the window.
        t.add(1000.0, 5);
        assert_eq!(t.per_minute(), None);
    }
}
