//! `FDGUARD_IGNORE`: patterns that leave fds out of exit leak reports (suppressions).
//!
//! A pattern is a glob (`*` any run of characters, `?` one character). An fd is suppressed when
//! the pattern matches its path (as the program gave it), its description, or the name of any
//! function on its creation stack.

use super::build::Observed;
use super::model::Frame;

/// Glob match over characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether `row` (created by `frames`) matches one of `patterns`.
pub fn is_suppressed<K>(row: &Observed<K>, frames: &[Frame], patterns: &[String]) -> bool {
    patterns.iter().any(|pat| {
        row.path.as_deref().is_some_and(|p| glob(pat, p))
            || glob(pat, &row.desc)
            || frames
                .iter()
                .filter_map(|f| f.function.as_deref())
                .any(|f| glob(pat, f))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Call;
    use crate::kind::FdKind;

    #[test]
    fn globs() {
        assert!(glob("util_open", "util_open"));
        assert!(!glob("util_open", "util_open2"));
        assert!(glob("/etc/*", "/etc/hosts"));
        assert!(glob("*open*", "util_open_config"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*", ""));
        assert!(glob("*::load*", "app::config::load_file"));
    }

    #[test]
    fn matches_paths_descriptions_and_functions() {
        let row = Observed::<u32> {
            fd: 5,
            kind: FdKind::File,
            desc: "/var/log/app.log".into(),
            call: Call::Fopen,
            age_ms: None,
            tid: None,
            stack: None,
            socket: None,
            kernel_path: Some("/var/log/app.log".into()),
            path: Some("app.log".into()),
            stream: true,
        };
        let frames = vec![Frame {
            function: Some("open_log".into()),
            ..Frame::default()
        }];
        assert!(is_suppressed(&row, &frames, &["app.*".into()]));
        assert!(is_suppressed(&row, &frames, &["/var/log/*".into()]));
        assert!(is_suppressed(&row, &frames, &["open_log".into()]));
        assert!(!is_suppressed(
            &row,
            &frames,
            &["main".into(), "/etc/*".into()]
        ));
    }
}
