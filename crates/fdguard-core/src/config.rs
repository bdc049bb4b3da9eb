//! `Config`: every `FDGUARD_*` variable, its default, and how it is parsed.
//!
//! Parsing is a pure function of a lookup closure, so tests never touch the process environment.
//! An invalid value is never fatal: it yields one warning line naming the variable, the value and
//! the default used instead.

/// Where reports go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportDest {
    Stderr,
    /// A path template: `%p` becomes the pid, `%t` a UTC timestamp, `%%` a percent sign.
    Path(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// What the accept guard does when `accept` fails for lack of fds (see `emfile`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmfileMode {
    Pause,
    Sleep,
    Shed,
    Off,
}

pub const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub disabled: bool,
    pub report: ReportDest,
    pub format: Format,
    /// Signal number that triggers a report; `None` for `FDGUARD_SIGNAL=none`.
    pub signal: Option<i32>,
    pub depth: usize,
    /// Percent of the soft limit that triggers a report; 0 disables.
    pub threshold: u8,
    pub emfile_interval_s: u64,
    pub at_exit: bool,
    pub leak_exitcode: Option<u8>,
    pub ignore: Vec<String>,
    pub close_stacks: bool,
    pub emfile: EmfileMode,
    pub backoff_max_ms: u64,
    pub raise_nofile: bool,
    /// Traced Go programs: how many ancestor goroutines a creation stack continues through
    /// (`GODEBUG=tracebackancestors`); 0: none.
    pub go_ancestors: u8,
}

/// Every variable with its default as the README states it. Unknown `FDGUARD_*` names are
/// reported, since a typo would otherwise silently do nothing.
pub const VARIABLES: &[(&str, &str)] = &[
    ("FDGUARD_DISABLE", "0"),
    ("FDGUARD_REPORT", "stderr"),
    ("FDGUARD_FORMAT", "text"),
    ("FDGUARD_SIGNAL", "USR2"),
    ("FDGUARD_DEPTH", "32"),
    ("FDGUARD_THRESHOLD", "80"),
    ("FDGUARD_EMFILE_INTERVAL", "60"),
    ("FDGUARD_AT_EXIT", "0"),
    ("FDGUARD_LEAK_EXITCODE", "unset"),
    ("FDGUARD_IGNORE", "empty"),
    ("FDGUARD_CLOSE_STACKS", "0"),
    ("FDGUARD_EMFILE", "pause"),
    ("FDGUARD_BACKOFF_MAX_MS", "1000"),
    ("FDGUARD_RAISE_NOFILE", "0"),
    ("FDGUARD_GO_ANCESTORS", "5"),
];

impl Default for Config {
    fn default() -> Self {
        Self {
            disabled: false,
            report: ReportDest::Stderr,
            format: Format::Text,
            signal: Some(libc::SIGUSR2),
            depth: 32,
            threshold: 80,
            emfile_interval_s: 60,
            at_exit: false,
            leak_exitcode: None,
            ignore: Vec::new(),
            close_stacks: false,
            emfile: EmfileMode::Pause,
            backoff_max_ms: 1000,
            raise_nofile: false,
            go_ancestors: 5,
        }
    }
}

/// Collects warnings while parsing.
struct Parser<'a, F: Fn(&str) -> Option<Vec<u8>>> {
    lookup: &'a F,
    warnings: Vec<String>,
}

impl<F: Fn(&str) -> Option<Vec<u8>>> Parser<'_, F> {
    /// Parses `name` with `parse`; on failure warns with `expected` and keeps `default`.
    fn get<T>(
        &mut self,
        name: &str,
        default: T,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> T {
        let Some(raw) = (self.lookup)(name) else {
            return default;
        };
        let text = String::from_utf8_lossy(&raw);
        let trimmed = text.trim();
        if let Some(v) = parse(trimmed) {
            return v;
        }
        let shown_default = VARIABLES
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, d)| d);
        self.warnings.push(format!(
            "fdguard: {name}={text:?} is not valid ({expected}); using the default {shown_default}"
        ));
        default
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn parse_in_range(s: &str, lo: u64, hi: u64) -> Option<u64> {
    s.parse::<u64>().ok().filter(|v| (lo..=hi).contains(v))
}

impl Config {
    /// Parses every variable through `lookup`; returns the config and the warnings to print.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<Vec<u8>>) -> (Config, Vec<String>) {
        let d = Config::default();
        let mut p = Parser {
            lookup: &lookup,
            warnings: Vec::new(),
        };
        let cfg = Config {
            disabled: p.get("FDGUARD_DISABLE", d.disabled, "expected 0 or 1", parse_bool),
            report: p.get(
                "FDGUARD_REPORT",
                d.report,
                "expected stderr or a file path",
                |s| match s {
                    "" => None,
                    "stderr" => Some(ReportDest::Stderr),
                    path => Some(ReportDest::Path(path.as_bytes().to_vec())),
                },
            ),
            format: p.get(
                "FDGUARD_FORMAT",
                d.format,
                "expected text or json",
                |s| match s.to_ascii_lowercase().as_str() {
                    "text" => Some(Format::Text),
                    "json" => Some(Format::Json),
                    _ => None,
                },
            ),
            signal: p.get(
                "FDGUARD_SIGNAL",
                d.signal,
                "expected none, USR1, USR2, HUP, TERM, WINCH, RTMIN+N or such",
                crate::signals::parse_signal,
            ),
            depth: p.get("FDGUARD_DEPTH", d.depth, "expected 0 to 64 frames", |s| {
                parse_in_range(s, 0, MAX_DEPTH as u64).map(|v| v as usize)
            }),
            threshold: p.get(
                "FDGUARD_THRESHOLD",
                d.threshold,
                "expected a percentage from 0 to 100",
                |s| parse_in_range(s, 0, 100).map(|v| v as u8),
            ),
            emfile_interval_s: p.get(
                "FDGUARD_EMFILE_INTERVAL",
                d.emfile_interval_s,
                "expected seconds, 0 to 86400",
                |s| parse_in_range(s, 0, 86400),
            ),
            at_exit: p.get("FDGUARD_AT_EXIT", d.at_exit, "expected 0 or 1", parse_bool),
            leak_exitcode: p.get(
                "FDGUARD_LEAK_EXITCODE",
                d.leak_exitcode,
                "expected an exit status from 1 to 255",
                |s| parse_in_range(s, 1, 255).map(|v| Some(v as u8)),
            ),
            ignore: p.get(
                "FDGUARD_IGNORE",
                d.ignore,
                "expected comma-separated patterns",
                |s| {
                    Some(
                        s.split(',')
                            .map(str::trim)
                            .filter(|p| !p.is_empty())
                            .map(String::from)
                            .collect(),
                    )
                },
            ),
            close_stacks: p.get(
                "FDGUARD_CLOSE_STACKS",
                d.close_stacks,
                "expected 0 or 1",
                parse_bool,
            ),
            emfile: p.get(
                "FDGUARD_EMFILE",
                d.emfile,
                "expected pause, sleep, shed or off",
                |s| match s.to_ascii_lowercase().as_str() {
                    "pause" => Some(EmfileMode::Pause),
                    "sleep" => Some(EmfileMode::Sleep),
                    "shed" => Some(EmfileMode::Shed),
                    "off" => Some(EmfileMode::Off),
                    _ => None,
                },
            ),
            backoff_max_ms: p.get(
                "FDGUARD_BACKOFF_MAX_MS",
                d.backoff_max_ms,
                "expected milliseconds, 5 to 60000",
                |s| parse_in_range(s, 5, 60_000),
            ),
            raise_nofile: p.get(
                "FDGUARD_RAISE_NOFILE",
                d.raise_nofile,
                "expected 0 or 1",
                parse_bool,
            ),
            go_ancestors: p.get(
                "FDGUARD_GO_ANCESTORS",
                d.go_ancestors,
                "expected 0 to 32 goroutines",
                |s| parse_in_range(s, 0, 32).map(|v| v as u8),
            ),
        };
        (cfg, p.warnings)
    }

    /// Warnings for `FDGUARD_*` names that are not variables of fdguard (typos).
    pub fn unknown_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !VARIABLES.iter().any(|(v, _)| v == n))
            .map(|n| format!("fdguard: unknown variable {n} ignored (see the README for the list)"))
            .collect()
    }
}

/// Expands a `FDGUARD_REPORT` template for this process.
pub fn expand_report_path(template: &[u8], pid: u32, timestamp: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(template.len() + 16);
    expand_report_path_with(template, pid, timestamp, &mut |piece| {
        out.extend_from_slice(piece)
    });
    out
}

/// `expand_report_path` without allocating: the path is handed to `emit` in pieces (the
/// library publishes it from a fork child).
pub fn expand_report_path_with(
    template: &[u8],
    pid: u32,
    timestamp: &str,
    emit: &mut dyn FnMut(&[u8]),
) {
    let pid = crate::decimal::Decimal::of(u64::from(pid));
    let mut rest = template;
    while let Some(i) = rest.iter().position(|b| *b == b'%') {
        emit(&rest[..i]);
        match rest.get(i + 1) {
            Some(b'p') => emit(pid.as_bytes()),
            Some(b't') => emit(timestamp.as_bytes()),
            Some(b'%') => emit(b"%"),
            // A lone `%`, or one before another letter, stays as it is.
            _ => {
                emit(b"%");
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 2..];
    }
    emit(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> (Config, Vec<String>) {
        let map: HashMap<String, Vec<u8>> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        Config::from_lookup(|n| map.get(n).cloned())
    }

    #[test]
    fn defaults_without_variables() {
        let (c, w) = parse(&[]);
        assert_eq!(c, Config::default());
        assert!(w.is_empty());
    }

    #[test]
    fn parses_valid_values() {
        let (c, w) = parse(&[
            ("FDGUARD_REPORT", "/tmp/fdg.%p.log"),
            ("FDGUARD_FORMAT", "JSON"),
            ("FDGUARD_SIGNAL", "sigusr1"),
            ("FDGUARD_DEPTH", "0"),
            ("FDGUARD_THRESHOLD", "95"),
            ("FDGUARD_AT_EXIT", "yes"),
            ("FDGUARD_LEAK_EXITCODE", "42"),
            ("FDGUARD_IGNORE", "util_open, /etc/*,"),
            ("FDGUARD_EMFILE", "shed"),
            ("FDGUARD_DISABLE", "1"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.report, ReportDest::Path(b"/tmp/fdg.%p.log".to_vec()));
        assert_eq!(c.format, Format::Json);
        assert_eq!(c.signal, Some(libc::SIGUSR1));
        assert_eq!(c.depth, 0);
        assert_eq!(c.threshold, 95);
        assert!(c.at_exit && c.disabled);
        assert_eq!(c.leak_exitcode, Some(42));
        assert_eq!(c.ignore, vec!["util_open", "/etc/*"]);
        assert_eq!(c.emfile, EmfileMode::Shed);
    }

    #[test]
    fn invalid_values_warn_once_each_and_keep_defaults() {
        let (c, w) = parse(&[
            ("FDGUARD_FORMAT", "xml"),
            ("FDGUARD_SIGNAL", "KILL"),
            ("FDGUARD_DEPTH", "1000"),
            ("FDGUARD_THRESHOLD", "-3"),
            ("FDGUARD_LEAK_EXITCODE", "0"),
            ("FDGUARD_EMFILE", "nap"),
            ("FDGUARD_REPORT", ""),
        ]);
        assert_eq!(c, Config::default());
        assert_eq!(w.len(), 7, "{w:#?}");
        assert!(
            w.iter()
                .any(|l| l.contains("FDGUARD_FORMAT=\"xml\"")
                    && l.contains("using the default text"))
        );
        assert!(w.iter().any(|l| l.contains("FDGUARD_SIGNAL=\"KILL\"")));
        assert!(
            w.iter()
                .any(|l| l.contains("FDGUARD_DEPTH") && l.contains("default 32"))
        );
    }

    #[test]
    fn unknown_names_are_flagged() {
        let w = Config::unknown_names(["FDGUARD_FORMAT", "FDGUARD_TRESHOLD"]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("FDGUARD_TRESHOLD"));
    }

    #[test]
    fn report_path_template() {
        assert_eq!(
            expand_report_path(b"/tmp/r.%p.%t.%%.%x", 42, "20261122T030405Z"),
            b"/tmp/r.42.20261122T030405Z.%.%x".to_vec()
        );
    }
}
