//! The operator's lines on stderr about the accept guard: which are due (`Lines`, a rate limit
//! that runs on the accept guard's thread and reads the listener table only through
//! snapshots), and what each says (`render`, given what that thread gathered about the
//! listener).

use super::listeners::{Guard, LISTENERS, Snapshot, Totals};
use fdguard_core::config::EmfileMode;

/// Lines on stderr: at most one per listener per interval, except the recovery line.
pub const LINE_INTERVAL_NS: u64 = 10_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    /// Accept started failing on a listener.
    First,
    /// Failures go on.
    Summary,
    /// Accept works again.
    Recovered,
}

/// One line for the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub fd: i32,
    pub errno: i32,
    /// First: an `emfile` report was asked for. Others: unused.
    pub reported: bool,
    /// Summary: since the previous line; Recovered: since the episode started.
    pub totals: Totals,
    /// Summary: time since the previous line; Recovered: length of the episode.
    pub span_ns: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct LineState {
    fd: i32,
    /// Episode announced by a `First` line (0: none).
    announced: u64,
    last_ns: u64,
    /// Totals at the last line.
    mark: Totals,
    /// Totals and time when the announced episode started.
    ep_base: Totals,
    ep_start: u64,
}

/// The rate limit of the operator's lines (the accept guard's thread only): per listener, a `First` line
/// when accept starts failing, then a `Summary` at most every `LINE_INTERVAL_NS` while failures
/// go on, and a `Recovered` line when an announced episode ends. A new episode within the
/// interval of the last line is announced when the interval is over, if it still lasts.
pub struct Lines {
    states: [LineState; LISTENERS],
}

impl Default for Lines {
    fn default() -> Self {
        Self {
            states: [LineState::default(); LISTENERS],
        }
    }
}

impl Lines {
    /// The lines due at `now`.
    pub fn tick(&mut self, g: &Guard, now: u64, out: &mut Vec<Notice>) {
        for (slot, st) in self.states.iter_mut().enumerate() {
            let Some(s) = g.snapshot(slot) else {
                *st = LineState::default();
                continue;
            };
            if st.fd != s.fd {
                *st = LineState {
                    fd: s.fd,
                    ..LineState::default()
                };
            }
            st.step(&s, now, out);
        }
    }
}

impl LineState {
    fn step(&mut self, s: &Snapshot, now: u64, out: &mut Vec<Notice>) {
        let notice = |kind, totals, span_ns| Notice {
            kind,
            fd: s.fd,
            errno: s.errno,
            reported: s.reported,
            totals,
            span_ns,
        };
        if self.announced != 0 && (!s.in_episode || s.episode != self.announced) {
            let span = s.end_ns.saturating_sub(self.ep_start);
            out.push(notice(
                NoticeKind::Recovered,
                s.totals.since(self.ep_base),
                span,
            ));
            self.announced = 0;
            self.last_ns = now;
            self.mark = s.totals;
        }
        if !s.in_episode {
            return;
        }
        let quiet = self.last_ns == 0 || now.saturating_sub(self.last_ns) >= LINE_INTERVAL_NS;
        if self.announced == 0 {
            if quiet {
                out.push(notice(NoticeKind::First, Totals::default(), 0));
                self.announced = s.episode;
                self.ep_base = s.base;
                self.ep_start = s.start_ns;
                self.last_ns = now;
                self.mark = s.totals;
            }
        } else if quiet && s.totals.failures > self.mark.failures {
            let span = now.saturating_sub(self.last_ns);
            out.push(notice(NoticeKind::Summary, s.totals.since(self.mark), span));
            self.last_ns = now;
            self.mark = s.totals;
        }
    }
}

/// What a line says beyond the notice itself (gathered by the accept guard's thread).
pub struct LineContext<'a> {
    pub addr: Option<&'a str>,
    /// fds open (the program's) and the soft limit, for `First`.
    pub open: Option<(usize, u64)>,
    /// fdguard holds a reserve fd below the soft limit (shed mode).
    pub reserve: bool,
    pub mode: EmfileMode,
    pub backoff_max_ms: u64,
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        _ => "error",
    }
}

/// The operator's line for a notice.
pub fn render(n: &Notice, c: &LineContext) -> String {
    let mut line = format!("fdguard: accept on fd {}", n.fd);
    if let Some(a) = c.addr {
        line.push_str(&format!(" ({a})"));
    }
    let t = n.totals;
    let figures = format!(
        "{} failures, paused {} ms, {} connections shed",
        t.failures,
        t.paused_ns / 1_000_000,
        t.shed
    );
    match n.kind {
        NoticeKind::First => {
            line.push_str(&format!(" failed: {}", errno_name(n.errno)));
            if let Some((open, soft)) = c.open {
                line.push_str(&format!(", {open} of {soft} fds open"));
                if c.reserve {
                    line.push_str(" (and 1 held in reserve by fdguard)");
                }
            }
            let max = c.backoff_max_ms;
            line.push_str(&match c.mode {
                EmfileMode::Sleep => format!("; sleeping in accept up to {max} ms"),
                EmfileMode::Shed => format!(
                    "; closing pending connections at once (shed), pausing accepts up to {max} ms"
                ),
                _ => format!("; pausing accepts up to {max} ms"),
            });
            line.push_str(if n.reported {
                "; report follows"
            } else {
                "; no new report (at most one per FDGUARD_EMFILE_INTERVAL)"
            });
        }
        NoticeKind::Summary => line.push_str(&format!(
            " still failing: {figures} in the last {} s",
            n.span_ns.div_ceil(1_000_000_000)
        )),
        NoticeKind::Recovered => line.push_str(&format!(
            " succeeds again after {:.1} s: {figures}",
            n.span_ns as f64 / 1e9
        )),
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emfile::fixtures::{Fake, MS, failed, guard};

    fn line_kinds(lines: &mut Lines, g: &Guard, now: u64) -> Vec<NoticeKind> {
        let mut out = vec![];
        lines.tick(g, now, &mut out);
        out.iter().map(|n| n.kind).collect()
    }

    #[test]
    fn lines_first_summary_every_10_s_and_recovery() {
        use NoticeKind::*;
        let g = guard(EmfileMode::Pause);
        let k = Fake::default();
        let mut lines = Lines::default();
        let fail = |at: u64| {
            k.now.set(at);
            g.note_wait();
            g.accept_failed(failed(3, false, true), 1, &k);
        };
        g.listening(3);
        assert!(line_kinds(&mut lines, &g, MS).is_empty());
        fail(1_000 * MS);
        assert_eq!(line_kinds(&mut lines, &g, 1_000 * MS + 1), [First]);
        for t in 1..=30 {
            fail((1_000 + t * 500) * MS);
            let kinds = line_kinds(&mut lines, &g, (1_000 + t * 500) * MS + 1);
            // One summary per 10 s while failures go on.
            assert_eq!(kinds.len(), usize::from(t == 20), "at {t}: {kinds:?}");
        }
        k.now.set(20_000 * MS);
        assert!(g.accept_succeeded(3, 1, &k));
        let mut out = vec![];
        lines.tick(&g, 20_001 * MS, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, Recovered);
        assert_eq!(out[0].totals.failures, 31);
        assert_eq!(out[0].span_ns, 19_000 * MS);
        // A new episode right after the recovery line waits for the interval.
        fail(20_002 * MS);
        assert!(line_kinds(&mut lines, &g, 20_003 * MS).is_empty());
        assert_eq!(line_kinds(&mut lines, &g, 30_002 * MS), [First]);
        // Episodes that come and go between two looks end with one recovery line.
        k.now.set(30_100 * MS);
        g.accept_succeeded(3, 1, &k);
        fail(30_200 * MS);
        k.now.set(30_300 * MS);
        g.accept_succeeded(3, 1, &k);
        assert_eq!(line_kinds(&mut lines, &g, 30_400 * MS), [Recovered]);
        assert!(line_kinds(&mut lines, &g, 50_000 * MS).is_empty());
    }

    #[test]
    fn rendered_lines() {
        let n = Notice {
            kind: NoticeKind::First,
            fd: 3,
            errno: libc::EMFILE,
            reported: true,
            totals: Totals::default(),
            span_ns: 0,
        };
        let c = LineContext {
            addr: Some("0.0.0.0:9999"),
            open: Some((12, 12)),
            reserve: false,
            mode: EmfileMode::Pause,
            backoff_max_ms: 1000,
        };
        assert_eq!(
            render(&n, &c),
            "fdguard: accept on fd 3 (0.0.0.0:9999) failed: EMFILE, 12 of 12 fds open; \
             pausing accepts up to 1000 ms; report follows"
        );
        let s = Notice {
            kind: NoticeKind::Summary,
            totals: Totals {
                failures: 12,
                paused_ns: 9_870 * MS,
                shed: 0,
            },
            span_ns: 10_000 * MS,
            ..n
        };
        assert_eq!(
            render(&s, &c),
            "fdguard: accept on fd 3 (0.0.0.0:9999) still failing: 12 failures, paused 9870 ms, \
             0 connections shed in the last 10 s"
        );
        let r = Notice {
            kind: NoticeKind::Recovered,
            span_ns: 2_340 * MS,
            ..s
        };
        assert!(render(&r, &c).ends_with(
            "succeeds again after 2.3 s: 12 failures, paused 9870 ms, 0 connections shed"
        ));
    }
}
