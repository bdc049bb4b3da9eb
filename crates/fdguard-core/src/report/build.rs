//! From the fds a recorder observed to the report's rows and stacks: grouping by creation
//! stack (largest group first) and the counts every report carries.

use std::collections::BTreeMap;

use super::model::{FdRow, Frame, Report, Stack, Word};
use crate::call::Call;
use crate::kind::FdKind;

/// One open fd as a recorder saw it. `K` is the recorder's own name for a creation stack (the
/// library's interned stack id); it becomes a group id in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed<K> {
    pub fd: i32,
    pub kind: FdKind,
    pub desc: String,
    pub call: Call,
    pub age_ms: Option<u64>,
    pub tid: Option<u32>,
    pub stack: Option<K>,
    pub tcp_state: Option<Word>,
    /// The fd belongs to a stdio `FILE`.
    pub stream: bool,
    /// The path as the program gave it, for suppressions (`FDGUARD_IGNORE`).
    pub path: Option<String>,
}

fn count_by<T: Ord>(items: impl Iterator<Item = T>) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

fn states<'a, K: 'a>(rows: impl Iterator<Item = &'a Observed<K>>) -> BTreeMap<Word, usize> {
    count_by(rows.filter_map(|r| r.tcp_state.clone()))
}

impl Report {
    /// Sets the rows, the stacks (each resolved once by `frames_of`) and the counts from the
    /// fds observed, in their order.
    pub fn fill<K: Ord + Copy>(
        &mut self,
        observed: &[Observed<K>],
        mut frames_of: impl FnMut(K) -> Vec<Frame>,
    ) {
        let mut by_stack: BTreeMap<K, Vec<&Observed<K>>> = BTreeMap::new();
        for r in observed {
            if let Some(s) = r.stack {
                by_stack.entry(s).or_default().push(r);
            }
        }
        let mut groups: Vec<(K, Stack)> = by_stack
            .into_iter()
            .map(|(key, rs)| {
                let ages = || rs.iter().filter_map(|r| r.age_ms);
                let stack = Stack {
                    count: rs.len(),
                    streams: rs.iter().filter(|r| r.stream).count(),
                    by_kind: count_by(rs.iter().map(|r| r.kind)),
                    tcp_states: states(rs.iter().copied()),
                    oldest_ms: ages().max().unwrap_or(0),
                    newest_ms: ages().min().unwrap_or(0),
                    ..Stack::default()
                };
                (key, stack)
            })
            .collect();
        groups.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(&b.0)));
        // Each stack's id, looked up once per row: a search of the groups for every row made
        // a report of many fds and many stacks quadratic.
        let mut ids = BTreeMap::new();
        for (id, (key, stack)) in groups.iter_mut().enumerate() {
            stack.id = id;
            stack.frames = frames_of(*key);
            ids.insert(*key, id);
        }
        self.fds = observed
            .iter()
            .map(|r| FdRow {
                fd: r.fd,
                kind: r.kind,
                desc: r.desc.clone(),
                call: Word::Borrowed(r.call.name()),
                age_ms: r.age_ms,
                tid: r.tid,
                stack: r.stack.and_then(|s| ids.get(&s).copied()),
            })
            .collect();
        self.stacks = groups.into_iter().map(|(_, s)| s).collect();
        self.open = observed.len();
        self.untracked = observed
            .iter()
            .filter(|r| r.call == Call::Untracked)
            .count();
        self.by_kind = count_by(observed.iter().map(|r| r.kind));
        self.tcp_states = states(observed.iter());
    }

    /// The rows of each stack id, in row order.
    pub fn rows_by_stack(&self) -> BTreeMap<usize, Vec<&FdRow>> {
        let mut m: BTreeMap<usize, Vec<&FdRow>> = BTreeMap::new();
        for row in &self.fds {
            if let Some(s) = row.stack {
                m.entry(s).or_default().push(row);
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(fd: i32, stack: Option<u32>, age_ms: u64) -> Observed<u32> {
        Observed {
            fd,
            kind: FdKind::File,
            desc: "/dev/null".into(),
            call: Call::Open,
            age_ms: Some(age_ms),
            tid: Some(11),
            stack,
            tcp_state: None,
            stream: false,
            path: None,
        }
    }

    #[test]
    fn groups_by_stack_largest_first() {
        let rows: Vec<_> = (3..9)
            .map(|fd| seen(fd, Some(if fd < 7 { 9 } else { 2 }), 10 - fd as u64))
            .collect();
        let mut r = Report::default();
        r.fill(&rows, |s| {
            vec![Frame {
                addr: u64::from(s),
                ..Default::default()
            }]
        });
        assert_eq!(r.stacks.len(), 2);
        assert_eq!((r.stacks[0].id, r.stacks[0].count), (0, 4));
        assert_eq!((r.stacks[0].oldest_ms, r.stacks[0].newest_ms), (7, 4));
        assert_eq!(r.stacks[0].frames[0].addr, 9);
        assert_eq!((r.stacks[1].count, r.stacks[1].frames[0].addr), (2, 2));
        assert_eq!(r.fds[0].stack, Some(0));
        assert_eq!(r.fds[5].stack, Some(1));
        assert_eq!((r.open, r.untracked), (6, 0));
        assert_eq!(r.by_kind[&FdKind::File], 6);
    }

    #[test]
    fn rows_and_ids_of_interleaved_stacks() {
        let rows: Vec<_> = (3..11)
            .map(|fd| {
                let stack = match fd % 3 {
                    0 => Some(4),
                    1 => Some(8),
                    _ => None,
                };
                seen(fd, stack, 0)
            })
            .collect();
        let mut r = Report::default();
        r.fill(&rows, |_| Vec::new());
        let by_stack = r.rows_by_stack();
        let fds = |id: usize| -> Vec<i32> { by_stack[&id].iter().map(|row| row.fd).collect() };
        // Equal counts: the smaller stack key first.
        assert_eq!(fds(0), [3, 6, 9]);
        assert_eq!(fds(1), [4, 7, 10]);
        assert_eq!(r.fds[2].stack, None);
    }

    #[test]
    fn counts_tcp_states_and_untracked_fds() {
        let mut a = seen(3, None, 0);
        a.kind = FdKind::Socket;
        a.tcp_state = Some("CLOSE_WAIT".into());
        a.call = Call::Untracked;
        let mut r = Report::default();
        r.fill(&[a, seen(4, None, 0)], |_: u32| Vec::new());
        assert_eq!(r.untracked, 1);
        assert_eq!(r.tcp_states[&Word::Borrowed("CLOSE_WAIT")], 1);
        assert!(r.stacks.is_empty());
    }

    /// What a recorder other than the library does: fill a report, print it both ways, and
    /// read the JSON back as the command does.
    #[test]
    fn a_filled_report_prints_and_reads_back() {
        let mut r = Report {
            pid: 42,
            cmdline: vec!["./dialer".into()],
            reason: "signal".into(),
            time: crate::report::iso8601_utc(0),
            ..Report::default()
        };
        let mut sock = seen(7, Some(1), 5);
        sock.kind = FdKind::Socket;
        sock.call = Call::Socket;
        sock.tcp_state = Some("CLOSE".into());
        r.fill(&[sock, seen(3, None, 9)], |_| {
            vec![Frame {
                function: Some("main.dialBackend".into()),
                ..Frame::default()
            }]
        });
        let text = crate::report::text::report(&r);
        assert!(text.starts_with("==42== fdguard: 2 of unlimited fds open in pid 42 (./dialer)"));
        assert!(text.contains("in main.dialBackend"), "{text}");
        let read = crate::read::parse_documents(&r.to_json()).unwrap();
        let crate::read::Document::Report(back) = &read[0] else {
            panic!("{read:?}")
        };
        // Everything but what the JSON has no key for.
        let mut expected = r.clone();
        expected.stacks[0].streams = 0;
        assert_eq!(**back, expected);
    }
}
