//! Reading fdguard's JSON reports (schema 1, as the README documents it) and `inspect --json`
//! snapshots, which share their keys: one parser for both.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fail::Failure;

/// The schema this command reads.
pub const SCHEMA: u64 = 1;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Limit {
    pub soft: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Frame {
    pub module: Option<String>,
    pub offset: Option<String>,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
}

impl Frame {
    /// The frame's name in a flame graph or a stack key: the function, else module+offset.
    pub fn name(&self) -> String {
        match (&self.function, &self.module, &self.offset) {
            (Some(f), _, _) => f.clone(),
            (None, Some(m), Some(o)) => format!("{}+{o}", short_module(m)),
            (None, Some(m), None) => short_module(m).to_string(),
            _ => "??".to_string(),
        }
    }

    /// What identifies the frame across reports and processes (addresses move with ASLR;
    /// module and offset do not).
    pub fn key(&self) -> String {
        match (&self.module, &self.offset) {
            (Some(m), Some(o)) => format!("{m}+{o}"),
            _ => format!(
                "{}@{}:{}",
                self.function.as_deref().unwrap_or("??"),
                self.file.as_deref().unwrap_or("?"),
                self.line.unwrap_or(0)
            ),
        }
    }

    /// `load_setting fopen_leak.c:12 (fopen_leak+0x122f)`, the report's way.
    pub fn display(&self) -> String {
        let mut s = self.function.clone().unwrap_or_else(|| "??".to_string());
        if let (Some(file), Some(line)) = (&self.file, self.line) {
            s.push_str(&format!(" {file}:{line}"));
        }
        if let (Some(m), Some(o)) = (&self.module, &self.offset) {
            s.push_str(&format!(" ({}+{o})", short_module(m)));
        }
        s
    }
}

fn short_module(m: &str) -> &str {
    m.rsplit('/').next().unwrap_or(m)
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Stack {
    pub count: usize,
    #[serde(default)]
    pub by_kind: BTreeMap<String, usize>,
    #[serde(default)]
    pub tcp_states: BTreeMap<String, usize>,
    #[serde(default)]
    pub frames: Vec<Frame>,
}

impl Stack {
    pub fn key(&self) -> Vec<String> {
        self.frames.iter().map(Frame::key).collect()
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Fd {
    pub kind: String,
    /// The creating call (`open`, `inherited`, `untracked`); reports only.
    pub call: Option<String>,
    pub stack: Option<usize>,
}

/// A group of `inspect` (fds pointing to one place).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Group {
    pub kind: String,
    pub by: String,
    pub key: String,
    pub count: usize,
    #[serde(default)]
    pub tcp_states: BTreeMap<String, usize>,
}

/// A report or a snapshot.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Doc {
    pub pid: Option<i64>,
    #[serde(default)]
    pub cmdline: Vec<String>,
    pub reason: Option<String>,
    pub time: Option<String>,
    #[serde(default)]
    pub limit: Limit,
    pub open: Option<usize>,
    #[serde(default)]
    pub by_kind: BTreeMap<String, usize>,
    /// In snapshots, and in reports since the key was added; else summed from the stacks.
    pub tcp_states: Option<BTreeMap<String, usize>>,
    #[serde(default)]
    pub fds: Vec<Fd>,
    #[serde(default)]
    pub stacks: Vec<Stack>,
    #[serde(default)]
    pub groups: Vec<Group>,
}

impl Doc {
    pub fn open(&self) -> usize {
        self.open.unwrap_or(self.fds.len())
    }

    pub fn tcp_states(&self) -> BTreeMap<String, usize> {
        if let Some(t) = &self.tcp_states {
            return t.clone();
        }
        let mut sum = BTreeMap::new();
        for s in &self.stacks {
            for (state, n) in &s.tcp_states {
                *sum.entry(state.clone()).or_default() += n;
            }
        }
        sum
    }

    /// Milliseconds since the epoch of `time`.
    pub fn unix_ms(&self) -> Option<u128> {
        let t = humantime::parse_rfc3339_weak(self.time.as_deref()?).ok()?;
        Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis())
    }

    /// `pid 42 (./server)`.
    pub fn who(&self) -> String {
        let pid = self.pid.map_or("?".to_string(), |p| p.to_string());
        match self.cmdline.first() {
            Some(p) => format!("pid {pid} ({p})"),
            None => format!("pid {pid}"),
        }
    }
}

/// The reports in `text` (one JSON object per line, as fdguard appends them, or one
/// pretty-printed object); bad-close events are skipped. Errors name `path`.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Doc>, Failure> {
    let shown = path.display();
    if text
        .lines()
        .any(|l| l.starts_with("==") && l.contains("== fdguard: "))
    {
        return Err(Failure::bad_input(format!(
            "{shown} is a text report: this reads JSON reports (FDGUARD_FORMAT=json, \
             `fdguard run --json`) and `fdguard inspect --json` output"
        )));
    }
    let mut docs = Vec::new();
    for (i, value) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        let value = match value {
            Ok(v) => v,
            // A report still being appended: the complete ones before it count.
            Err(e) if e.is_eof() && !docs.is_empty() => break,
            Err(e) => {
                return Err(Failure::bad_input(format!(
                    "{shown} is not fdguard's JSON (line {}: {e})",
                    e.line()
                )));
            }
        };
        let Some(schema) = value.get("fdguard") else {
            return Err(Failure::bad_input(format!(
                "{shown} is not fdguard's JSON: object {} has no \"fdguard\" key",
                i + 1
            )));
        };
        if schema.as_u64() != Some(SCHEMA) {
            return Err(Failure::bad_input(format!(
                "{shown}: schema {schema} is not one this fdguard reads (it reads schema \
                 {SCHEMA}); use the fdguard that wrote it"
            )));
        }
        if value.get("event").is_some() {
            continue;
        }
        let doc: Doc = serde_json::from_value(value).map_err(|e| {
            Failure::bad_input(format!("{shown}: object {} is not a report: {e}", i + 1))
        })?;
        docs.push(doc);
    }
    Ok(docs)
}

/// The last report in the file at `path`.
pub fn load_last(path: &Path) -> Result<Doc, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::bad_input(format!("cannot read {}: {e}", path.display())))?;
    let mut docs = parse(path, &text)?;
    let n = docs.len();
    let Some(last) = docs.pop() else {
        return Err(Failure::bad_input(format!(
            "{} holds no fdguard report",
            path.display()
        )));
    };
    if n > 1 {
        eprintln!(
            "fdguard: {} holds {n} reports; using the last ({}, {})",
            path.display(),
            last.reason.as_deref().unwrap_or("?"),
            last.time.as_deref().unwrap_or("?")
        );
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("r.json")
    }

    #[test]
    fn reads_json_lines_and_skips_events() {
        let text = "{\"fdguard\":1,\"pid\":7,\"reason\":\"signal\",\"open\":2,\"fds\":[],\"stacks\":[]}\n\
                    {\"fdguard\":1,\"pid\":7,\"event\":\"bad_close\",\"fd\":3}\n\
                    {\"fdguard\":1,\"pid\":7,\"reason\":\"exit\",\"open\":1}\n\
                    {\"fdguard\":1,\"pid\":7,\"rea";
        let docs = parse(p(), text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].reason.as_deref(), Some("exit"));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let msg = |t: &str| parse(p(), t).unwrap_err().message;
        assert!(msg("hello").contains("is not fdguard's JSON"));
        assert!(msg("{\"a\":1}").contains("no \"fdguard\" key"));
        assert!(msg("{\"fdguard\":2}").contains("schema 2 is not one this fdguard reads"));
        assert!(msg("==4== fdguard: 3 of 1024 fds open\n").contains("is a text report"));
        assert!(msg("{\"fdguard\":1,\"open\":\"x\"}").contains("is not a report"));
        assert!(parse(p(), "").unwrap().is_empty());
    }

    #[test]
    fn frames_are_keyed_by_module_and_offset() {
        let f = Frame {
            module: Some("/srv/server".into()),
            offset: Some("0x233".into()),
            function: Some("accept_conn".into()),
            file: Some("server.c".into()),
            line: Some(42),
        };
        assert_eq!(f.key(), "/srv/server+0x233");
        assert_eq!(f.name(), "accept_conn");
        assert_eq!(f.display(), "accept_conn server.c:42 (server+0x233)");
        let stripped = Frame {
            function: None,
            ..f
        };
        assert_eq!(stripped.name(), "server+0x233");
    }
}
