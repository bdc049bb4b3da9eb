//! Names for code a JIT made, from the map the runtime writes for `perf`, read at report time.
//!
//! node (V8) started with `--perf-basic-prof` appends a line `START SIZE NAME` (hex, without
//! `0x`) to `/tmp/perf-PID.map` for each piece of code it makes (`JS:*leakFile /app.js:12:3`:
//! the function, its script, line and column); with `--interpreted-frames-native-stack`, each
//! function the interpreter runs gets its own copy of the interpreter's entry, and a line, so
//! interpreted frames are told apart too. `fdguard run` turns both on for node programs. Other
//! JITs write the same format (HotSpot through an agent, LuaJIT, ...): their names are kept as
//! written.
//!
//! JIT code is in no loaded object, so the symbolizer asks here only for a pc no object holds,
//! and only in a report child (reading the map opens a file): once per report, when the first
//! such frame comes. Code can be freed and its memory given to new code: a later line covering
//! the same addresses is the newer code and wins. A stack interned before that still holds the
//! old addresses, and is named after the new code: the map keeps no history of what was where
//! when.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};

use fdguard_core::report::Frame;

use crate::child;

/// `Frame::module` of a JavaScript function's frame.
pub const JAVASCRIPT: &str = "javascript";

/// The most of a map read: a server that compiles for weeks writes a long one, and a report
/// child keeps what it allocates until it ends.
const MAX_BYTES: u64 = 256 << 20;

/// Entry kinds V8 gives JavaScript code (`JS` since V8 11, `LazyCompile`, `Function` before);
/// the others (`Builtin`, `BytecodeHandler`, `Stub`, `RegExp`, ...) are V8's own code.
const JS_KINDS: [&str; 5] = ["JS", "Eval", "Script", "LazyCompile", "Function"];

/// The program's perf map, read when first asked.
#[derive(Default)]
pub struct PerfMap {
    code: OnceCell<Code>,
}

impl PerfMap {
    /// `base`, the frame of a pc no loaded object holds, named from the program's perf map if
    /// it has the pc (else `base` as it is).
    pub fn frame(&self, pc: usize, base: Frame) -> Frame {
        let code = self.code.get_or_init(|| {
            child::program_pid()
                .and_then(|pid| std::fs::File::open(format!("/tmp/perf-{pid}.map")).ok())
                .map(Code::read)
                .unwrap_or_default()
        });
        match code.name_of(pc) {
            Some(name) => named(name, base),
            None => base,
        }
    }
}

/// Code ranges by start address: where each ends, and its name.
#[derive(Default)]
struct Code(BTreeMap<usize, (usize, String)>);

impl Code {
    /// Every line of a map, in order; lines that are not `START SIZE NAME` are skipped.
    fn read(from: impl Read) -> Code {
        let mut code = Code::default();
        let mut lines = BufReader::new(from.take(MAX_BYTES));
        let mut line = Vec::new();
        while lines.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            if let Some((start, size, name)) = parse_line(&line) {
                code.add(start, start.saturating_add(size), name);
            }
            line.clear();
        }
        code
    }

    /// Code at `[start, end)`, newer than every range added before: what it overlaps is gone.
    fn add(&mut self, start: usize, end: usize, name: String) {
        let inside: Vec<usize> = self.0.range(start..end).map(|(s, _)| *s).collect();
        for s in inside {
            self.0.remove(&s);
        }
        if let Some((_, (before_end, _))) = self.0.range_mut(..start).next_back() {
            *before_end = (*before_end).min(start);
        }
        self.0.insert(start, (end, name));
    }

    fn name_of(&self, pc: usize) -> Option<&str> {
        let (_, (end, name)) = self.0.range(..=pc).next_back()?;
        (pc < *end).then_some(name.as_str())
    }
}

fn parse_line(line: &[u8]) -> Option<(usize, usize, String)> {
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches(['\n', '\r']).splitn(3, ' ');
    let start = usize::from_str_radix(parts.next()?, 16).ok()?;
    let size = usize::from_str_radix(parts.next()?, 16).ok()?;
    let name = parts.next().filter(|n| !n.is_empty())?;
    Some((start, size, name.to_string()))
}

/// `base` named after a map entry: a JavaScript function as function, script and line, in
/// module "javascript"; anything else by the entry's name as written.
fn named(name: &str, base: Frame) -> Frame {
    let Some((function, file, line)) = javascript(name) else {
        return Frame {
            function: Some(name.to_string()),
            ..base
        };
    };
    Frame {
        function: Some(function),
        file,
        line,
        module: Some(JAVASCRIPT.to_string()),
        offset: None,
        ..base
    }
}

/// A V8 entry for JavaScript code, `KIND:MARKER NAME SCRIPT:LINE:COLUMN` (the marker says how
/// it was compiled: `~` interpreted, `^` baseline, `+` Maglev, `*` TurboFan), as function,
/// script and line; a function without a name is "(anonymous)", as in V8's own traces.
fn javascript(entry: &str) -> Option<(String, Option<String>, Option<u32>)> {
    let (kind, rest) = entry.split_once(':')?;
    if !JS_KINDS.contains(&kind) {
        return None;
    }
    let rest = rest.trim_start_matches(['~', '^', '+', '*']);
    let (name, place) = match split_place(rest) {
        Some((name, file, line)) => (name, Some((file, line))),
        None => (rest, None),
    };
    let name = match name.trim() {
        "" => "(anonymous)",
        n => n,
    };
    Some((
        name.to_string(),
        place.map(|(file, _)| file.to_string()),
        place.map(|(_, line)| line),
    ))
}

/// `NAME SCRIPT:LINE:COLUMN` as name, script and line. Names (`get length`) and paths may both
/// hold spaces: the script starts at the first space followed by `/` or by a scheme
/// (`node:net`, `file:///app.js`), else at the last space.
fn split_place(s: &str) -> Option<(&str, &str, u32)> {
    let (rest, column) = s.rsplit_once(':')?;
    let (head, line) = rest.rsplit_once(':')?;
    column.parse::<u32>().ok()?;
    let line = line.parse().ok()?;
    let starts_script = |after: &str| {
        after.starts_with('/')
            || after.split_once(':').is_some_and(|(scheme, _)| {
                !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric())
            })
    };
    let space = head
        .match_indices(' ')
        .map(|(i, _)| i)
        .find(|&i| starts_script(&head[i + 1..]))
        .or_else(|| head.rfind(' '))?;
    Some((&head[..space], &head[space + 1..], line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn javascript_entries_become_function_script_and_line() {
        for (entry, function, file, line) in [
            (
                "JS:*leakFile /path/app.js:12:3",
                "leakFile",
                "/path/app.js",
                12,
            ),
            (
                "JS:~internalConnect node:net:1038:25",
                "internalConnect",
                "node:net",
                1038,
            ),
            ("JS:~ /tmp/leak.js:5:62", "(anonymous)", "/tmp/leak.js", 5),
            (
                "LazyCompile:^get length /srv/my app/x.js:3:9",
                "get length",
                "/srv/my app/x.js",
                3,
            ),
            (
                "JS:+run file:///srv/app.mjs:40:1",
                "run",
                "file:///srv/app.mjs",
                40,
            ),
            (
                "Eval:~ evalmachine.<anonymous>:1:1",
                "(anonymous)",
                "evalmachine.<anonymous>",
                1,
            ),
        ] {
            let expected = (function.to_string(), Some(file.to_string()), Some(line));
            assert_eq!(javascript(entry), Some(expected), "{entry}");
        }
        assert_eq!(javascript("JS:~foo"), Some(("foo".to_string(), None, None)));
        assert_eq!(javascript("Builtin:ArrayPrototypePush"), None);
        assert_eq!(javascript("RegExp:^a:b$"), None);
        assert_eq!(javascript("no kind at all"), None);
    }

    #[test]
    fn frames_in_javascript_and_in_other_jit_code() {
        let base = Frame {
            addr: 0x7f00_0000_1235,
            ..Frame::default()
        };
        let f = named("JS:*leakFile /path/app.js:12:3", base.clone());
        assert_eq!(f.function.as_deref(), Some("leakFile"));
        assert_eq!(f.file.as_deref(), Some("/path/app.js"));
        assert_eq!(f.line, Some(12));
        assert_eq!(f.module.as_deref(), Some(JAVASCRIPT));
        assert_eq!((f.addr, f.offset), (base.addr, None));
        let f = named("Stub:CEntry", base.clone());
        assert_eq!(f.function.as_deref(), Some("Stub:CEntry"));
        assert_eq!((f.module, f.file, f.line), (None, None, None));
    }

    #[test]
    fn later_lines_replace_the_code_they_overlap() {
        let map = "1000 100 JS:~old /a.js:1:1\n\
                   1100 80 JS:~next /a.js:2:1\n\
                   not a line\n\
                   1200 zz JS:~bad /a.js:3:1\n\
                   1080 100 JS:~new /a.js:4:1\n\
                   2000 10 Builtin:Abort";
        let code = Code::read(map.as_bytes());
        let at = |pc| code.name_of(pc);
        assert_eq!(at(0xfff), None);
        assert_eq!(at(0x1000), Some("JS:~old /a.js:1:1"));
        assert_eq!(at(0x107f), Some("JS:~old /a.js:1:1"));
        assert_eq!(at(0x1080), Some("JS:~new /a.js:4:1"));
        assert_eq!(at(0x1150), Some("JS:~new /a.js:4:1"));
        // `next`, which `new` covered, is gone; the old code does not come back.
        assert_eq!(at(0x1180), None);
        assert_eq!(at(0x200f), Some("Builtin:Abort"));
        assert_eq!(at(0x2010), None);
    }
}
