//! `fdguard diff OLD.json NEW.json`: what grew between two reports. A leak is the creation
//! stack that grows; stacks are matched by their frames' module and offset, so two reports of
//! two runs of the same binary match too. Snapshots of `inspect` (no stacks) are compared by
//! their groups (directory, peer, local port).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use fdguard_core::escape::push_line;
use fdguard_core::kind::{FdKind, kind_words};
use fdguard_core::read::Document;
use fdguard_core::report::Frame;
use fdguard_core::schema::Schema;
use serde::Serialize;

use crate::fail::Outcome;
use crate::reports::load_last;
use crate::units::{count, duration, signed};

/// Stacks and groups shown in text.
const SHOWN: usize = 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Change {
    pub old: usize,
    pub new: usize,
    pub delta: i64,
}

impl Change {
    fn of(old: usize, new: usize) -> Change {
        Change {
            old,
            new,
            delta: new as i64 - old as i64,
        }
    }

    /// `+800 (3 → 803)`.
    fn text(&self) -> String {
        format!(
            "{} ({} -> {})",
            signed(self.delta),
            count(self.old),
            count(self.new)
        )
    }
}

#[derive(Debug, Serialize)]
pub struct Side {
    pub pid: Option<i64>,
    pub reason: Option<String>,
    pub time: Option<String>,
    pub open: usize,
}

fn given(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Side {
    fn of(d: &Document) -> Side {
        Side {
            pid: Some(d.pid()),
            reason: given(d.reason()),
            time: given(d.time()),
            open: d.open(),
        }
    }
}

/// Counts by name (kinds and TCP states as the JSON spells them).
fn by_name<K: AsRef<str>>(counts: &BTreeMap<K, usize>) -> BTreeMap<String, usize> {
    counts
        .iter()
        .map(|(k, n)| (k.as_ref().to_string(), *n))
        .collect()
}

/// Milliseconds since the epoch of a document's `time`.
fn unix_ms(d: &Document) -> Option<u128> {
    let t = humantime::parse_rfc3339_weak(d.time()).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis())
}

/// One creation stack (or, for snapshots, one group) in either report.
#[derive(Debug, Serialize)]
pub struct Item {
    /// `new`, `grew`, `shrank`, `gone` or `same`.
    pub status: &'static str,
    #[serde(flatten)]
    pub count: Change,
    /// Of the newer report where the item is in it, else of the older.
    pub by_kind: BTreeMap<String, usize>,
    pub tcp_states: BTreeMap<String, usize>,
    /// Stacks: innermost first, as in reports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<Frame>,
    /// Groups: what and where (`socket`, `peer`, `10.0.0.5:6379`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupKey>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    pub kind: String,
    pub by: String,
    pub key: String,
}

#[derive(Debug, Serialize)]
pub struct Diff {
    pub fdguard: Schema,
    pub old: Side,
    pub new: Side,
    pub open: Change,
    /// Seconds between the two, when both have a time.
    pub elapsed_s: Option<f64>,
    /// Open fds gained per minute over that time.
    pub per_minute: Option<f64>,
    pub by_kind: BTreeMap<String, Change>,
    pub tcp_states: BTreeMap<String, Change>,
    /// Largest growth first; unchanged ones last.
    pub stacks: Vec<Item>,
    pub groups: Vec<Item>,
}

fn changes(
    old: &BTreeMap<String, usize>,
    new: &BTreeMap<String, usize>,
) -> BTreeMap<String, Change> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let get = |m: &BTreeMap<String, usize>| m.get(k).copied().unwrap_or(0);
            (k.clone(), Change::of(get(old), get(new)))
        })
        .collect()
}

fn status(c: Change) -> &'static str {
    match (c.old, c.new) {
        (0, _) => "new",
        (_, 0) => "gone",
        (o, n) if n > o => "grew",
        (o, n) if n < o => "shrank",
        _ => "same",
    }
}

fn by_growth(items: &mut [Item]) {
    items.sort_by(|a, b| {
        let rank = |i: &Item| (i.count.delta == 0, -i.count.delta);
        rank(a).cmp(&rank(b))
    });
}

fn stack_items(old: &Document, new: &Document) -> Vec<Item> {
    let mut keys: Vec<Vec<String>> = Vec::new();
    let mut pairs: BTreeMap<Vec<String>, (Option<usize>, Option<usize>)> = BTreeMap::new();
    for (side, doc) in [(0, old), (1, new)] {
        for (i, s) in doc.stacks().iter().enumerate() {
            let key = s.key();
            let e = pairs.entry(key.clone()).or_insert_with(|| {
                keys.push(key);
                (None, None)
            });
            if side == 0 {
                e.0 = Some(i)
            } else {
                e.1 = Some(i)
            }
        }
    }
    let mut items: Vec<Item> = keys
        .iter()
        .map(|k| {
            let (o, n) = pairs[k];
            let o = o.map(|i| &old.stacks()[i]);
            let n = n.map(|i| &new.stacks()[i]);
            let c = Change::of(o.map_or(0, |s| s.count), n.map_or(0, |s| s.count));
            let shown = n.or(o).expect("in one of the two");
            Item {
                status: status(c),
                count: c,
                by_kind: by_name(&shown.by_kind),
                tcp_states: by_name(&shown.tcp_states),
                frames: shown.frames.clone(),
                group: None,
            }
        })
        .collect();
    by_growth(&mut items);
    items
}

fn group_items(old: &Document, new: &Document) -> Vec<Item> {
    let index = |d: &Document| -> BTreeMap<GroupKey, (usize, BTreeMap<String, usize>)> {
        d.groups()
            .iter()
            .map(|g| {
                let key = GroupKey {
                    kind: g.kind.name().to_string(),
                    by: g.by.to_string(),
                    key: g.key.clone(),
                };
                (key, (g.count, by_name(&g.tcp_states)))
            })
            .collect()
    };
    let (o, n) = (index(old), index(new));
    let keys: BTreeSet<&GroupKey> = o.keys().chain(n.keys()).collect();
    let mut items: Vec<Item> = keys
        .into_iter()
        .map(|k| {
            let c = Change::of(o.get(k).map_or(0, |g| g.0), n.get(k).map_or(0, |g| g.0));
            let states = n
                .get(k)
                .or(o.get(k))
                .map(|g| g.1.clone())
                .unwrap_or_default();
            Item {
                status: status(c),
                count: c,
                by_kind: BTreeMap::from([(k.kind.clone(), c.new.max(c.old))]),
                tcp_states: states,
                frames: Vec::new(),
                group: Some(k.clone()),
            }
        })
        .collect();
    by_growth(&mut items);
    items
}

pub fn diff(old: &Document, new: &Document) -> Diff {
    let open = Change::of(old.open(), new.open());
    let elapsed_s = match (unix_ms(old), unix_ms(new)) {
        (Some(a), Some(b)) if b > a => Some((b - a) as f64 / 1000.0),
        _ => None,
    };
    Diff {
        fdguard: Schema,
        old: Side::of(old),
        new: Side::of(new),
        open,
        per_minute: elapsed_s.map(|s| open.delta as f64 * 60.0 / s),
        elapsed_s,
        by_kind: changes(&by_name(old.by_kind()), &by_name(new.by_kind())),
        tcp_states: changes(&by_name(old.tcp_states()), &by_name(new.tcp_states())),
        stacks: stack_items(old, new),
        groups: group_items(old, new),
    }
}

fn changes_line(title: &str, m: &BTreeMap<String, Change>) -> Option<String> {
    let mut v: Vec<(&String, &Change)> = m.iter().filter(|(_, c)| c.delta != 0).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by_key(|(_, c)| -c.delta);
    let parts: Vec<String> = v.iter().map(|(k, c)| format!("{k} {}", c.text())).collect();
    Some(format!("{title}: {}", parts.join(", ")))
}

/// "sockets, 798 CLOSE_WAIT".
fn contents(i: &Item) -> String {
    let words = |k: &str, n: usize| {
        let kind = FdKind::from_name(k).unwrap_or_default();
        kind_words(kind, n, false)
    };
    let mut parts: Vec<String> = if i.by_kind.len() == 1 {
        let (k, n) = i.by_kind.iter().next().expect("one");
        vec![words(k, *n)]
    } else {
        i.by_kind
            .iter()
            .map(|(k, n)| format!("{} {}", count(*n), words(k, *n)))
            .collect()
    };
    parts.extend(
        i.tcp_states
            .iter()
            .map(|(s, n)| format!("{} {s}", count(*n))),
    );
    parts.join(", ")
}

fn item_lines(i: &Item, lines: &mut Vec<String>) {
    let what = match i.status {
        "new" => ", a new stack",
        "gone" => ", gone",
        _ => "",
    };
    if let Some(g) = &i.group {
        lines.push(format!(
            "{} {} fds{what}: {} {} {}",
            signed(i.count.delta),
            g.kind,
            i.count.text(),
            g.by,
            g.key
        ));
        return;
    }
    lines.push(format!(
        "{} fds{what} ({} -> {}): {}; created at:",
        signed(i.count.delta),
        count(i.count.old),
        count(i.count.new),
        contents(i)
    ));
    lines.extend(
        i.frames
            .iter()
            .enumerate()
            .map(|(n, f)| format!("   #{n:<2} {}", f.display())),
    );
}

/// The difference as text, line by line, each line escaped as it is written: the reports
/// are files whose paths, symbols and command lines their processes chose.
pub fn render_text(d: &Diff, old: &Document, new: &Document) -> String {
    let limit = new
        .soft_limit()
        .map_or(String::new(), |l| format!(" of {}", count(l as usize)));
    let mut first = format!(
        "{} -> {}{limit} fds open ({})",
        count(d.open.old),
        count(d.open.new),
        signed(d.open.delta)
    );
    if let (Some(s), Some(rate)) = (d.elapsed_s, d.per_minute) {
        let _ = write!(first, " in {} ({rate:+.1} fds/min)", duration(s));
    }
    let (a, b) = (old.who(), new.who());
    if a == b {
        let _ = write!(first, "; {a}");
    } else {
        let _ = write!(first, "; {a} -> {b}");
    }
    let mut lines = vec![first];
    lines.extend(changes_line("by kind", &d.by_kind));
    lines.extend(changes_line("by TCP state", &d.tcp_states));
    let items = if d.stacks.is_empty() {
        &d.groups
    } else {
        &d.stacks
    };
    let changed: Vec<&Item> = items.iter().filter(|i| i.count.delta != 0).collect();
    if changed.is_empty() {
        lines.push(if d.stacks.is_empty() {
            "no group changed".into()
        } else {
            "no stack changed".into()
        });
    }
    for i in changed.iter().take(SHOWN) {
        lines.push(String::new());
        item_lines(i, &mut lines);
    }
    if changed.len() > SHOWN {
        lines.push(String::new());
        lines.push(format!(
            "... and {} more that changed (--json lists all)",
            changed.len() - SHOWN
        ));
    }
    let same: usize = items.iter().filter(|i| i.count.delta == 0).count();
    if same > 0 {
        let what = if d.stacks.is_empty() {
            "groups"
        } else {
            "stacks"
        };
        let fds: usize = items
            .iter()
            .filter(|i| i.count.delta == 0)
            .map(|i| i.count.new)
            .sum();
        lines.push(String::new());
        lines.push(format!("unchanged: {same} {what} with {} fds", count(fds)));
    }
    let mut o = String::new();
    for l in &lines {
        push_line(&mut o, l);
    }
    o
}

pub fn run(old: &Path, new: &Path, json: bool) -> Outcome {
    let (a, b) = (load_last(old)?, load_last(new)?);
    let d = diff(&a, &b);
    if json {
        println!("{}", serde_json::to_string(&d).expect("serializable"));
    } else {
        print!("{}", render_text(&d, &a, &b));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdguard_core::read::parse_documents;

    fn doc(json: &str) -> Document {
        parse_documents(json).unwrap().pop().unwrap()
    }

    const FRAME_A: &str = r#"{"module":"/srv/app","offset":"0x10","function":"leak"}"#;
    const FRAME_B: &str = r#"{"module":"/srv/app","offset":"0x20","function":"keep"}"#;
    const FRAME_C: &str = r#"{"module":"/srv/app","offset":"0x30","function":"fresh"}"#;

    fn report(time: &str, stacks: &[(&str, usize)]) -> Document {
        let open: usize = stacks.iter().map(|(_, n)| n).sum();
        let stacks: Vec<String> = stacks
            .iter()
            .enumerate()
            .map(|(i, (f, n))| {
                format!(r#"{{"id":{i},"count":{n},"by_kind":{{"file":{n}}},"tcp_states":{{}},"frames":[{f}]}}"#)
            })
            .collect();
        doc(&format!(
            r#"{{"fdguard":1,"pid":9,"cmdline":["./app"],"reason":"signal","time":"{time}","open":{open},"by_kind":{{"file":{open}}},"fds":[],"stacks":[{}]}}"#,
            stacks.join(",")
        ))
    }

    #[test]
    fn the_growing_stack_comes_first() {
        let old = report("2026-12-05T10:00:00.000Z", &[(FRAME_B, 5), (FRAME_A, 3)]);
        let new = report(
            "2026-12-05T10:05:00.000Z",
            &[(FRAME_A, 803), (FRAME_B, 5), (FRAME_C, 14)],
        );
        let d = diff(&old, &new);
        assert_eq!(d.stacks[0].status, "grew");
        assert_eq!(d.stacks[0].count, Change::of(3, 803));
        assert_eq!(d.stacks[0].frames[0].function.as_deref(), Some("leak"));
        assert_eq!(d.stacks[1].status, "new");
        assert_eq!(d.stacks[2].status, "same");
        assert_eq!(d.elapsed_s, Some(300.0));
        let text = render_text(&d, &old, &new);
        assert!(
            text.contains("+800 fds (3 -> 803): files; created at:\n   #0  leak"),
            "{text}"
        );
        assert!(text.contains("+14 fds, a new stack (0 -> 14)"), "{text}");
        assert!(text.contains("unchanged: 1 stacks with 5 fds"), "{text}");
        let gone = diff(&new, &old);
        let statuses: Vec<&str> = gone.stacks.iter().map(|s| s.status).collect();
        assert_eq!(statuses, ["gone", "shrank", "same"]);
    }

    #[test]
    fn snapshots_compare_by_group() {
        let snap = |n: usize| {
            doc(&format!(
                r#"{{"fdguard":1,"pid":3,"reason":"inspect","open":{n},"by_kind":{{"socket":{n}}},"tcp_states":{{"CLOSE_WAIT":{n}}},"groups":[{{"kind":"socket","by":"peer","key":"10.0.0.5:6379","count":{n},"tcp_states":{{"CLOSE_WAIT":{n}}}}}],"fds":[]}}"#
            ))
        };
        let d = diff(&snap(10), &snap(50));
        assert!(d.stacks.is_empty());
        assert_eq!(d.groups[0].count.delta, 40);
        assert_eq!(d.tcp_states["CLOSE_WAIT"], Change::of(10, 50));
        let text = render_text(&d, &snap(10), &snap(50));
        assert!(
            text.contains("+40 socket fds: +40 (10 -> 50) peer 10.0.0.5:6379"),
            "{text}"
        );
    }

    /// Reports are files their processes chose the words of: a name with a newline or an
    /// escape sequence stays on its line, escaped.
    #[test]
    fn what_the_reports_named_is_escaped() {
        let evil = r#"evil\n+999 fds\u001b[2J\u001b]0;pwn\u0007"#;
        let shown = r"evil\n+999 fds\x1b[2J\x1b]0;pwn\x07";
        let frame = format!(r#"{{"module":"/srv/{evil}","offset":"0x10","function":"{evil}"}}"#);
        let old = report("2026-12-05T10:00:00.000Z", &[(&frame, 3)]);
        let new = report("2026-12-05T10:05:00.000Z", &[(&frame, 5)]);
        let text = render_text(&diff(&old, &new), &old, &new);
        assert!(
            text.contains(&format!("   #0  {shown} ({shown}+0x10)\n")),
            "{text}"
        );
        let snap = |n: usize| {
            doc(&format!(
                r#"{{"fdguard":1,"pid":3,"cmdline":["{evil}"],"reason":"inspect","open":{n},"by_kind":{{"file":{n}}},"tcp_states":{{"{evil}":{n}}},"groups":[{{"kind":"file","by":"{evil}","key":"{evil}","count":{n},"tcp_states":{{}}}}],"fds":[]}}"#
            ))
        };
        let text = render_text(&diff(&snap(1), &snap(2)), &snap(1), &snap(2));
        assert!(
            text.contains(&format!("+1 file fds: +1 (1 -> 2) {shown} {shown}\n")),
            "{text}"
        );
        assert!(text.contains(&format!("by TCP state: {shown} +1 (1 -> 2)\n")));
        assert!(text.contains(&format!("; pid 3 ({shown})\n")), "{text}");
        assert!(!text.contains('\x1b') && !text.contains("\n+999"), "{text}");
    }
}
