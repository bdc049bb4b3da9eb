//! The accept guard's policy, pure: the backoff schedule, which errors mean "out of fds",
//! `decide` (what to do about one failure), and where shed mode's reserve fd sits. The module
//! documentation of `emfile` explains it.

use fdguard_core::config::EmfileMode;

/// The first backoff period.
pub const FIRST_PERIOD_NS: u64 = 5_000_000;
/// The longest sleep for a non-blocking listener fdguard never saw in a wait call: such a
/// thread may be polling other sockets by trying them, so it must not stop for long.
pub const SHORT_SLEEP_NS: u64 = 10_000_000;

/// The backoff period after `failures_in_row` consecutive failures (at least 1).
pub fn period_ns(failures_in_row: u32, max_ns: u64) -> u64 {
    let doublings = failures_in_row.saturating_sub(1).min(32);
    FIRST_PERIOD_NS
        .saturating_mul(1u64 << doublings)
        .min(max_ns.max(FIRST_PERIOD_NS))
}

/// Errors that mean "no fd (or no memory for one) right now": retrying at once cannot help.
pub fn is_out_of_fds(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

/// Errors a reserve fd can get past (per process or system-wide fd table full).
pub fn sheddable(errno: i32) -> bool {
    errno == libc::EMFILE || errno == libc::ENFILE
}

/// What fdguard observed about the failing call and its thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The listener is blocking (no `O_NONBLOCK`).
    pub blocking: bool,
    /// The listener is in an epoll set or was seen in a poll/select call.
    pub watched: bool,
    /// This thread failed on this listener before, in this episode of failures...
    pub again: bool,
    /// ...and called epoll_wait, poll or select since.
    pub waited: bool,
    /// The listener's hidden period had not ended yet.
    pub within_pause: bool,
    /// Shed mode closed every pending connection: the listener is not readable now.
    pub shed_emptied: bool,
}

/// What the failing `accept` does before returning its error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Return at once.
    None,
    /// Sleep this long.
    Sleep(u64),
    /// Wait up to this long for a new connection (it will be shed at the next try).
    UntilReadable(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Hide the listener from the program's waits for the period.
    pub hide: bool,
    pub hold: Hold,
}

/// The policy: what to do about one failure, given the mode, the period and what was seen.
pub fn decide(mode: EmfileMode, period: u64, s: Seen) -> Decision {
    let short = period.min(SHORT_SLEEP_NS);
    let (hide, hold) = match mode {
        EmfileMode::Off => (false, Hold::None),
        EmfileMode::Sleep => (false, Hold::Sleep(period)),
        EmfileMode::Pause | EmfileMode::Shed => {
            if s.again && !s.waited {
                // Retrying without waiting: the thread does nothing else until accept works.
                let long = s.blocking || s.watched;
                (false, Hold::Sleep(if long { period } else { short }))
            } else if s.again && s.within_pause {
                // It waited, yet saw the listener during its pause: hiding did not work here
                // (an epoll set fdguard did not see, EPOLLEXCLUSIVE, a busy listener).
                (true, Hold::Sleep(short))
            } else if s.blocking && !s.watched {
                (false, Hold::Sleep(period))
            } else {
                (true, Hold::None)
            }
        }
    };
    if mode == EmfileMode::Shed && s.shed_emptied {
        // Nothing is pending, so nothing to hide; a sleep can end with the next client, which
        // the next try sheds at once instead of letting it wait out the period.
        let hold = match hold {
            Hold::Sleep(ns) => Hold::UntilReadable(ns),
            h => h,
        };
        return Decision { hide: false, hold };
    }
    Decision { hide, hold }
}

/// Where the shed reserve should sit for soft limit `soft`: as high as possible below it
/// (never 0 to 2, never beyond 65535: a higher number only grows the kernel's fd table).
pub fn reserve_targets(soft: u64) -> impl Iterator<Item = i32> {
    let top = soft.min(1 << 16) as i64 - 1;
    (0..16)
        .map(move |i| top - ((1i64 << i) - 1))
        .take_while(move |t| *t >= 3.max(top / 2))
        .map(|t| t as i32)
}

/// Whether a reserve at `fd` can stay: below the soft limit, and not far below the band of
/// `reserve_targets` (as after the program raised its own limit).
pub fn reserve_in_place(fd: i32, soft: u64) -> bool {
    let fd = fd as u64;
    fd < soft && fd >= soft.min(1 << 16) / 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emfile::fixtures::MS;

    fn seen() -> Seen {
        Seen::default()
    }

    #[test]
    fn backoff_doubles_from_5_ms_to_the_cap() {
        let p: Vec<u64> = (1..=10).map(|k| period_ns(k, 1000 * MS) / MS).collect();
        assert_eq!(p, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(period_ns(0, 1000 * MS), 5 * MS);
        assert_eq!(period_ns(u32::MAX, 60_000 * MS), 60_000 * MS);
        assert_eq!(period_ns(3, 5 * MS), 5 * MS);
    }

    #[test]
    fn out_of_fds_errors() {
        for e in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(is_out_of_fds(e));
        }
        assert!(!is_out_of_fds(libc::EAGAIN) && !is_out_of_fds(libc::ECONNABORTED));
        assert!(sheddable(libc::EMFILE) && !sheddable(libc::ENOBUFS));
    }

    #[test]
    fn policy_per_wait_style() {
        use EmfileMode::*;
        let p = 80 * MS;
        let d = |mode, s| decide(mode, p, s);
        let ret = Decision {
            hide: true,
            hold: Hold::None,
        };
        let sleep = |ns| Decision {
            hide: false,
            hold: Hold::Sleep(ns),
        };
        // A blocking accept loop sleeps the period from the first failure.
        let blocking = Seen {
            blocking: true,
            ..seen()
        };
        assert_eq!(d(Pause, blocking), sleep(p));
        // An event loop (watched, waits between failures) returns at once; the listener hides.
        let watched = Seen {
            watched: true,
            ..seen()
        };
        assert_eq!(d(Pause, watched), ret);
        let cycle = Seen {
            watched: true,
            again: true,
            waited: true,
            ..seen()
        };
        assert_eq!(d(Pause, cycle), ret);
        // A blocking listener in a poll loop is an event loop too.
        assert_eq!(
            d(
                Pause,
                Seen {
                    blocking: true,
                    ..cycle
                }
            ),
            ret
        );
        // An accept-until-EAGAIN loop calls again without waiting: sleep the period.
        let et = Seen {
            watched: true,
            again: true,
            ..seen()
        };
        assert_eq!(d(Pause, et), sleep(p));
        // A non-blocking listener never seen in a wait: short sleeps only.
        let busy = Seen {
            again: true,
            ..seen()
        };
        assert_eq!(d(Pause, busy), sleep(SHORT_SLEEP_NS));
        assert_eq!(d(Pause, seen()), ret);
        // Waited, yet failed again during its pause: hiding did not work, short sleep.
        let leaky = Seen {
            within_pause: true,
            ..cycle
        };
        assert_eq!(
            d(Pause, leaky),
            Decision {
                hide: true,
                hold: Hold::Sleep(SHORT_SLEEP_NS)
            }
        );
        // sleep mode sleeps whatever the socket; off does nothing.
        assert_eq!(d(Sleep, watched), sleep(p));
        assert_eq!(
            d(Off, blocking),
            Decision {
                hide: false,
                hold: Hold::None
            }
        );
        // shed: nothing pending after shedding, so nothing to hide, and sleeps end with the
        // next client; when shedding did not empty the backlog it is pause.
        let emptied = |s: Seen| Seen {
            shed_emptied: true,
            ..s
        };
        assert_eq!(
            d(Shed, emptied(watched)),
            Decision {
                hide: false,
                hold: Hold::None
            }
        );
        assert_eq!(
            d(Shed, emptied(blocking)),
            Decision {
                hide: false,
                hold: Hold::UntilReadable(p)
            }
        );
        assert_eq!(d(Shed, watched), ret);
        // Short periods stay short.
        assert_eq!(decide(Pause, 5 * MS, busy), sleep(5 * MS));
    }

    #[test]
    fn reserve_sits_high_below_the_limit() {
        let t: Vec<i32> = reserve_targets(1024).collect();
        assert_eq!(t[..4], [1023, 1022, 1020, 1016]);
        assert!(t.iter().all(|t| *t >= 511));
        assert_eq!(reserve_targets(12).collect::<Vec<_>>(), [11, 10, 8]);
        assert_eq!(reserve_targets(1 << 20).next(), Some(65535));
        assert_eq!(reserve_targets(3).count(), 0);
        assert!(reserve_in_place(1023, 1024) && reserve_in_place(300, 1024));
        assert!(!reserve_in_place(1024, 1024), "above a lowered limit");
        assert!(!reserve_in_place(11, 1024), "far below a raised limit");
        assert!(reserve_in_place(11, 12));
    }
}
