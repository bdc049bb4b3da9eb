//! Signals by name: the ones a user may pick for report requests (`FDGUARD_SIGNAL`,
//! `--signal`), and the names fdguard gives them in its messages, made without allocating (the
//! library names a signal from inside a `sigaction` call, which may run in a signal handler).

use std::fmt;

/// Signals a user may pick: asynchronous ones whose default action nobody relies on for
/// correctness. Fault signals, SIGKILL/SIGSTOP, SIGCHLD and SIGPIPE are refused.
const NAMES: &[(&str, i32)] = &[
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("TERM", libc::SIGTERM),
    ("ALRM", libc::SIGALRM),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("URG", libc::SIGURG),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
];

/// `None` = the user asked for no signal; `Some(n)` = that signal.
pub fn parse_signal(s: &str) -> Option<Option<i32>> {
    let up = s.to_ascii_uppercase();
    if up == "NONE" {
        return Some(None);
    }
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some((_, n)) = NAMES.iter().find(|(n, _)| *n == name) {
        return Some(Some(*n));
    }
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let rt = if let Some(off) = name.strip_prefix("RTMIN+") {
        off.parse::<i32>().ok().map(|o| rtmin + o)
    } else if let Some(off) = name.strip_prefix("RTMAX-") {
        off.parse::<i32>().ok().map(|o| rtmax - o)
    } else if name == "RTMIN" {
        Some(rtmin)
    } else if name == "RTMAX" {
        Some(rtmax)
    } else if let Ok(n) = name.parse::<i32>() {
        if NAMES.iter().any(|(_, v)| *v == n) {
            return Some(Some(n));
        }
        Some(n)
    } else {
        None
    };
    rt.filter(|n| (rtmin..=rtmax).contains(n)).map(Some)
}

/// A signal's name: `SIGUSR2`, `SIGRTMAX`, `SIGRTMAX-3`, `SIGRTMIN+5`, or `signal 7`.
#[derive(Clone, Copy)]
pub struct SignalName {
    bytes: [u8; 16],
    len: usize,
}

impl SignalName {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("signal")
    }

    fn push(mut self, s: &[u8]) -> Self {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self
    }

    fn number(self, n: u32) -> Self {
        self.push(crate::decimal::Decimal::of(u64::from(n)).as_bytes())
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of signal `sig`. Real-time signals are named from the nearer end of the range,
/// as `kill -l` does.
pub fn name(sig: i32) -> SignalName {
    let empty = SignalName {
        bytes: [0; 16],
        len: 0,
    };
    if let Some((n, _)) = NAMES.iter().find(|(_, v)| *v == sig) {
        return empty.push(b"SIG").push(n.as_bytes());
    }
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    match sig {
        s if s == rtmin => empty.push(b"SIGRTMIN"),
        s if s == rtmax => empty.push(b"SIGRTMAX"),
        s if (rtmin..=rtmax).contains(&s) && rtmax - s <= s - rtmin => {
            empty.push(b"SIGRTMAX-").number((rtmax - s) as u32)
        }
        s if (rtmin..=rtmax).contains(&s) => empty.push(b"SIGRTMIN+").number((s - rtmin) as u32),
        s => empty.push(b"signal ").number(s.unsigned_abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_number_and_realtime() {
        assert_eq!(parse_signal("none"), Some(None));
        assert_eq!(parse_signal("USR2"), Some(Some(libc::SIGUSR2)));
        assert_eq!(parse_signal("SIGHUP"), Some(Some(libc::SIGHUP)));
        assert_eq!(parse_signal("10"), Some(Some(10)));
        assert_eq!(parse_signal("RTMIN+2"), Some(Some(libc::SIGRTMIN() + 2)));
        assert_eq!(parse_signal("SEGV"), None);
        assert_eq!(parse_signal("9"), None);
    }

    #[test]
    fn names_read_back() {
        let rtmax = libc::SIGRTMAX();
        let rtmin = libc::SIGRTMIN();
        for (sig, text) in [
            (libc::SIGUSR2, "SIGUSR2"),
            (rtmax, "SIGRTMAX"),
            (rtmax - 3, "SIGRTMAX-3"),
            (rtmin, "SIGRTMIN"),
            (rtmin + 2, "SIGRTMIN+2"),
            (libc::SIGSEGV, "signal 11"),
        ] {
            assert_eq!(name(sig).as_str(), text);
            assert_eq!(
                parse_signal(text).flatten().unwrap_or(-1) == sig,
                sig != libc::SIGSEGV
            );
        }
    }
}
