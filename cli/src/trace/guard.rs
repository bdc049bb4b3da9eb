//! The accept guard for a traced program (seed 003: the accept loop that spins at 100% CPU on
//! EMFILE): an `accept` that fails for lack of fds (EMFILE, ENFILE) on a blocking listener is
//! held at its exit stop for a backoff before it returns, its error unchanged: 5 ms, doubling
//! up to `FDGUARD_BACKOFF_MAX_MS`, back to 5 ms once an accept succeeds. A blocking accept loop
//! then sleeps instead of spinning, as under the library. A nonblocking listener (an event
//! loop's) is not held in `pause` mode: the thread serves its other clients too, and the
//! tracer cannot hide the listener from its waits as the library does; `sleep` holds it all
//! the same, `off` never; `shed` holds as `pause` (closing pending connections would need a
//! call made in the program). The operator's lines are the library's (`accept_lines`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fdguard_core::accept_lines::{Notice, NoticeKind, Totals};
use fdguard_core::config::EmfileMode;

const FIRST_DELAY: Duration = Duration::from_millis(5);
/// A summary line at most this often while failures go on.
const LINE_INTERVAL: Duration = Duration::from_secs(10);

/// Failures on one listener since accept last worked on it.
#[derive(Clone, Copy, Debug)]
struct Episode {
    delay: Duration,
    start: Instant,
    last_line: Instant,
    /// Totals when the episode started and at its last line.
    base: Totals,
    mark: Totals,
    errno: i32,
}

/// What a failed accept gets: how long its thread is held (none: at once), and a line to say.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub hold: Option<Duration>,
    pub line: Option<Notice>,
}

pub struct AcceptGuard {
    mode: EmfileMode,
    max: Duration,
    episodes: HashMap<i32, Episode>,
    totals: Totals,
}

impl AcceptGuard {
    pub fn new(mode: EmfileMode, backoff_max_ms: u64) -> AcceptGuard {
        AcceptGuard {
            mode,
            max: Duration::from_millis(backoff_max_ms),
            episodes: HashMap::new(),
            totals: Totals::default(),
        }
    }

    pub fn mode(&self) -> EmfileMode {
        self.mode
    }

    pub fn max_ms(&self) -> u64 {
        self.max.as_millis() as u64
    }

    /// An accept on listener `fd` failed with `errno` at `now`; `blocking`: the listener is.
    /// `reported`: an `emfile` report was asked for it (said in the first line).
    pub fn failed(
        &mut self,
        fd: i32,
        errno: i32,
        blocking: bool,
        reported: bool,
        now: Instant,
    ) -> Verdict {
        if self.mode == EmfileMode::Off {
            return Verdict {
                hold: None,
                line: None,
            };
        }
        let before = self.totals;
        self.totals.failures += 1;
        let holds = blocking || self.mode == EmfileMode::Sleep;
        let totals = self.totals;
        let mut line = None;
        let episode = self.episodes.entry(fd).or_insert_with(|| {
            line = Some(Notice {
                kind: NoticeKind::First,
                fd,
                errno,
                reported,
                totals: Totals::default(),
                span_ns: 0,
            });
            Episode {
                delay: FIRST_DELAY,
                start: now,
                last_line: now,
                base: before,
                mark: totals,
                errno,
            }
        });
        if line.is_none() && now.duration_since(episode.last_line) >= LINE_INTERVAL {
            line = Some(Notice {
                kind: NoticeKind::Summary,
                fd,
                errno,
                reported: false,
                totals: totals.since(episode.mark),
                span_ns: now.duration_since(episode.last_line).as_nanos() as u64,
            });
            episode.last_line = now;
            episode.mark = totals;
        }
        let hold = holds.then_some(episode.delay);
        if holds {
            self.totals.paused_ns += episode.delay.as_nanos() as u64;
            episode.delay = (episode.delay * 2).min(self.max);
        }
        Verdict { hold, line }
    }

    /// An accept on listener `fd` succeeded at `now`: its episode, if any, ends with a line.
    pub fn succeeded(&mut self, fd: i32, now: Instant) -> Option<Notice> {
        let episode = self.episodes.remove(&fd)?;
        Some(Notice {
            kind: NoticeKind::Recovered,
            fd,
            errno: episode.errno,
            reported: false,
            totals: self.totals.since(episode.base),
            span_ns: now.duration_since(episode.start).as_nanos() as u64,
        })
    }

    /// Every failure and pause since the start (the reports' `emfile`).
    pub fn totals(&self) -> Totals {
        self.totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_accepts_back_off_and_recover() {
        let start = Instant::now();
        let mut g = AcceptGuard::new(EmfileMode::Pause, 40);
        let holds: Vec<Option<Duration>> = (0..6)
            .map(|i| g.failed(3, libc::EMFILE, true, i == 0, start).hold)
            .collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(holds, [ms(5), ms(10), ms(20), ms(40), ms(40), ms(40)]);
        assert_eq!(g.totals().failures, 6);
        assert_eq!(g.totals().paused_ns, 155_000_000);
        let first = g.failed(4, libc::EMFILE, true, true, start).line.unwrap();
        assert_eq!(
            (first.kind, first.fd, first.reported),
            (NoticeKind::First, 4, true)
        );
        let later = start + Duration::from_secs(11);
        let summary = g.failed(3, libc::EMFILE, true, false, later).line.unwrap();
        assert_eq!(summary.kind, NoticeKind::Summary);
        let recovered = g.succeeded(3, later).unwrap();
        assert_eq!(recovered.kind, NoticeKind::Recovered);
        assert_eq!(recovered.totals.failures, 8);
        assert_eq!(g.succeeded(3, later), None);
        assert_eq!(g.failed(3, libc::EMFILE, true, false, later).hold, ms(5));
    }

    #[test]
    fn event_loops_are_held_only_in_sleep_mode_and_off_is_off() {
        let now = Instant::now();
        let mut pause = AcceptGuard::new(EmfileMode::Pause, 1000);
        assert_eq!(pause.failed(3, libc::EMFILE, false, true, now).hold, None);
        assert_eq!(pause.totals().failures, 1);
        let mut sleep = AcceptGuard::new(EmfileMode::Sleep, 1000);
        assert!(
            sleep
                .failed(3, libc::EMFILE, false, true, now)
                .hold
                .is_some()
        );
        let mut off = AcceptGuard::new(EmfileMode::Off, 1000);
        let v = off.failed(3, libc::EMFILE, true, true, now);
        assert_eq!((v.hold, v.line), (None, None));
    }
}
