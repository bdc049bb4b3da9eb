//! The operator's lines on stderr about the accept guard, the library's and the tracer's
//! alike: `fdguard: accept on fd 3 (0.0.0.0:9999) failed: EMFILE, 12 of 12 fds open; pausing
//! accepts up to 1000 ms; report follows`, then a summary at most every 10 s while failures go
//! on, and a line when accept succeeds again.

use crate::config::EmfileMode;

/// Failures, time paused and connections shed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub failures: u64,
    pub paused_ns: u64,
    pub shed: u64,
}

impl Totals {
    pub fn since(self, earlier: Totals) -> Totals {
        Totals {
            failures: self.failures.saturating_sub(earlier.failures),
            paused_ns: self.paused_ns.saturating_sub(earlier.paused_ns),
            shed: self.shed.saturating_sub(earlier.shed),
        }
    }
}

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

    const MS: u64 = 1_000_000;

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
