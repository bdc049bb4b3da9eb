//! Reading fdguard's JSON documents back: a file of reports as the library appends them (one
//! object a line; bad-close events among them are skipped; the last may still be being
//! written), one pretty-printed object, or an `inspect --json` snapshot.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::kind::FdKind;
use crate::report::{Report, Stack, Word};
use crate::schema::SCHEMA;
use crate::snapshot::{self, Group, Snapshot};

/// A report or a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    Report(Box<Report>),
    Snapshot(Box<Snapshot>),
}

/// Why a text is not one this version reads; `describe` words it for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// A text report (`==PID== fdguard: ...`), not JSON.
    TextReport,
    NotJson {
        line: usize,
        error: String,
    },
    /// Object number `object` (from 1) has no `"fdguard"` key.
    NoSchema {
        object: usize,
    },
    /// The `"fdguard"` key holds another schema number.
    OtherSchema {
        found: String,
    },
    NotAReport {
        object: usize,
        error: String,
    },
}

impl ReadError {
    /// One line naming `source` (a path) and what is wrong with it.
    pub fn describe(&self, source: &str) -> String {
        match self {
            ReadError::TextReport => format!(
                "{source} is a text report: this reads JSON reports (FDGUARD_FORMAT=json, \
                 `fdguard run --json`) and `fdguard inspect --json` output"
            ),
            ReadError::NotJson { line, error } => {
                format!("{source} is not fdguard's JSON (line {line}: {error})")
            }
            ReadError::NoSchema { object } => {
                format!("{source} is not fdguard's JSON: object {object} has no \"fdguard\" key")
            }
            ReadError::OtherSchema { found } => format!(
                "{source}: schema {found} is not one this fdguard reads (it reads schema \
                 {SCHEMA}); use the fdguard that wrote it"
            ),
            ReadError::NotAReport { object, error } => {
                format!("{source}: object {object} is not a report: {error}")
            }
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe("the input"))
    }
}

impl std::error::Error for ReadError {}

/// The documents in `text`, in order; bad-close events are skipped, and an incomplete last
/// object after complete ones is left out (a report still being appended).
pub fn parse_documents(text: &str) -> Result<Vec<Document>, ReadError> {
    if text
        .lines()
        .any(|l| l.starts_with("==") && l.contains("== fdguard: "))
    {
        return Err(ReadError::TextReport);
    }
    let mut docs = Vec::new();
    for (i, value) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        let object = i + 1;
        let value = match value {
            Ok(v) => v,
            Err(e) if e.is_eof() && !docs.is_empty() => break,
            Err(e) => {
                return Err(ReadError::NotJson {
                    line: e.line(),
                    error: e.to_string(),
                });
            }
        };
        let Some(schema) = value.get("fdguard") else {
            return Err(ReadError::NoSchema { object });
        };
        if schema.as_u64() != Some(SCHEMA) {
            return Err(ReadError::OtherSchema {
                found: schema.to_string(),
            });
        }
        if value.get("event").is_some() {
            continue;
        }
        let is_snapshot = value.get("reason").and_then(Value::as_str) == Some(snapshot::REASON);
        let not_a_report = |e: serde_json::Error| ReadError::NotAReport {
            object,
            error: e.to_string(),
        };
        let doc = if is_snapshot {
            Document::Snapshot(serde_json::from_value(value).map_err(not_a_report)?)
        } else {
            // Reports written before `tcp_states` was a key: the stacks' states add up to it.
            let sum_states = value.get("tcp_states").is_none();
            let mut r: Box<Report> = serde_json::from_value(value).map_err(not_a_report)?;
            if sum_states {
                r.tcp_states = sum(r.stacks.iter().map(|s| &s.tcp_states));
            }
            Document::Report(r)
        };
        docs.push(doc);
    }
    Ok(docs)
}

fn sum<'a, K: Ord + Clone + 'a>(
    maps: impl Iterator<Item = &'a BTreeMap<K, usize>>,
) -> BTreeMap<K, usize> {
    let mut total = BTreeMap::new();
    for m in maps {
        for (k, n) in m {
            *total.entry(k.clone()).or_default() += n;
        }
    }
    total
}

/// What readers of either kind of document ask.
impl Document {
    pub fn pid(&self) -> i64 {
        match self {
            Document::Report(r) => i64::from(r.pid),
            Document::Snapshot(s) => i64::from(s.pid),
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Document::Report(r) => &r.reason,
            Document::Snapshot(s) => &s.reason,
        }
    }

    pub fn time(&self) -> &str {
        match self {
            Document::Report(r) => &r.time,
            Document::Snapshot(s) => &s.time,
        }
    }

    pub fn soft_limit(&self) -> Option<u64> {
        match self {
            Document::Report(r) => r.limit.soft,
            Document::Snapshot(s) => s.limit.soft,
        }
    }

    pub fn open(&self) -> usize {
        match self {
            Document::Report(r) => r.open,
            Document::Snapshot(s) => s.open,
        }
    }

    pub fn by_kind(&self) -> &BTreeMap<FdKind, usize> {
        match self {
            Document::Report(r) => &r.by_kind,
            Document::Snapshot(s) => &s.summary.by_kind,
        }
    }

    pub fn tcp_states(&self) -> &BTreeMap<Word, usize> {
        match self {
            Document::Report(r) => &r.tcp_states,
            Document::Snapshot(s) => &s.summary.tcp_states,
        }
    }

    /// Creation stacks: a report's; a snapshot has none.
    pub fn stacks(&self) -> &[Stack] {
        match self {
            Document::Report(r) => &r.stacks,
            Document::Snapshot(_) => &[],
        }
    }

    /// Where the fds point: a snapshot's groups; a report has none.
    pub fn groups(&self) -> &[Group] {
        match self {
            Document::Report(_) => &[],
            Document::Snapshot(s) => &s.summary.groups,
        }
    }

    /// `pid 42 (./server)`.
    pub fn who(&self) -> String {
        match self {
            Document::Report(r) => r.who(),
            Document::Snapshot(s) => s.who(),
        }
    }

    /// The fds without a creation stack, as (how they came, kind): `inherited`, `untracked`, or
    /// for a snapshot, which says nothing of where fds came from, none.
    pub fn loose_fds(&self) -> Vec<(&str, FdKind)> {
        match self {
            Document::Report(r) => r
                .fds
                .iter()
                .filter(|f| f.stack.is_none())
                .map(|f| (&*f.call, f.kind))
                .collect(),
            Document::Snapshot(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Frame;

    #[test]
    fn reads_json_lines_and_skips_events() {
        let text = "{\"fdguard\":1,\"pid\":7,\"reason\":\"signal\",\"open\":2,\"fds\":[],\"stacks\":[]}\n\
                    {\"fdguard\":1,\"pid\":7,\"event\":\"bad_close\",\"fd\":3}\n\
                    {\"fdguard\":1,\"pid\":7,\"reason\":\"exit\",\"open\":1}\n\
                    {\"fdguard\":1,\"pid\":7,\"rea";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].reason(), "exit");
        assert_eq!(docs[0].open(), 2);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let msg = |t: &str| parse_documents(t).unwrap_err().describe("r.json");
        assert!(msg("hello").contains("r.json is not fdguard's JSON"));
        assert!(msg("{\"a\":1}").contains("no \"fdguard\" key"));
        assert!(msg("{\"fdguard\":2}").contains("schema 2 is not one this fdguard reads"));
        assert!(msg("==4== fdguard: 3 of 1024 fds open\n").contains("is a text report"));
        assert!(msg("{\"fdguard\":1,\"open\":\"x\"}").contains("is not a report"));
        assert!(parse_documents("").unwrap().is_empty());
    }

    #[test]
    fn a_report_reads_back_as_written() {
        let mut r = Report {
            pid: 9,
            reason: "threshold".into(),
            ..Report::default()
        };
        r.stacks.push(Stack {
            count: 1,
            frames: vec![Frame {
                addr: 0x55d0_c0a1_b2c3,
                module: Some("/srv/app".into()),
                offset: Some(0x1b2c3),
                ..Frame::default()
            }],
            ..Stack::default()
        });
        let docs = parse_documents(&r.to_json()).unwrap();
        assert_eq!(docs, [Document::Report(Box::new(r))]);
    }

    #[test]
    fn old_reports_sum_tcp_states_from_their_stacks() {
        let text = r#"{"fdguard":1,"reason":"signal","stacks":[
            {"id":0,"count":2,"tcp_states":{"CLOSE_WAIT":2}},
            {"id":1,"count":1,"tcp_states":{"CLOSE_WAIT":1,"LISTEN":1}}]}"#;
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs[0].tcp_states()["CLOSE_WAIT"], 3);
        assert_eq!(docs[0].tcp_states()["LISTEN"], 1);
    }

    #[test]
    fn a_snapshot_is_told_apart_by_its_reason() {
        let text = r#"{"fdguard":1,"pid":3,"reason":"inspect","open":1,"by_kind":{"socket":1},
            "groups":[{"kind":"socket","by":"peer","key":"10.0.0.5:6379","count":1}],
            "fds":[{"fd":3,"kind":"socket","desc":"tcp","socket":{"proto":"tcp","type":"stream","in_tables":false}}]}"#;
        let docs = parse_documents(text).unwrap();
        let Document::Snapshot(s) = &docs[0] else {
            panic!("{docs:?}")
        };
        assert_eq!(docs[0].groups()[0].key, "10.0.0.5:6379");
        assert_eq!(docs[0].by_kind()[&FdKind::Socket], 1);
        assert!(!s.fds[0].socket.as_ref().unwrap().in_tables);
        assert!(docs[0].stacks().is_empty());
    }
}
