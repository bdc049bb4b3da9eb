//! The operator's lines on stderr about the accept guard: which are due (`Lines`, a rate limit
//! that runs on the accept guard's thread and reads the listener table only through
//! snapshots); what each says is fdguard-core's `accept_lines::render`, shared with the
//! command's tracer.

use super::listeners::{Guard, LISTENERS, Snapshot};
pub use fdguard_core::accept_lines::{LineContext, Notice, NoticeKind, Totals, render};

/// Lines on stderr: at most one per listener per interval, except the recovery line.
pub const LINE_INTERVAL_NS: u64 = 10_000_000_000;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emfile::fixtures::{Fake, MS, failed, guard};
    use fdguard_core::config::EmfileMode;

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
}
