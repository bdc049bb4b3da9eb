//! From the fds a recorder observed to the report's rows and stacks: grouping by creation
//! stack (largest group first) and the counts every report carries.

use std::collections::BTreeMap;

use super::model::{FdRow, Frame, Report, SharedPlace, Stack, Word};
use crate::call::Call;
use crate::kind::FdKind;
use crate::place::{Context, Place, Pointing};
use crate::sockdesc::SocketDesc;

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
    /// What the kernel says of a socket: its TCP state is counted, its addresses place it.
    pub socket: Option<SocketDesc>,
    /// The kernel's path of a file or directory: where it points.
    pub kernel_path: Option<String>,
    /// The fd belongs to a stdio `FILE`.
    pub stream: bool,
    /// The path as the program gave it, for suppressions (`FDGUARD_IGNORE`).
    pub path: Option<String>,
}

impl<K> Observed<K> {
    fn pointing(&self) -> Pointing<'_> {
        Pointing {
            kind: self.kind,
            path: self.kernel_path.as_deref(),
            socket: self.socket.as_ref(),
            listed: self.socket.as_ref().is_some_and(SocketDesc::in_tables),
        }
    }
}

/// The share of a stack's fds (in tenths) that must point to one place for the report to
/// name it. Not all of them: a pool's connections to one backend among which one connect
/// failed, or a log directory's files beside one in a subdirectory, still say where the
/// stack's fds go, and the text gives the count when it is not all. But a clear majority: an
/// accept loop serving two listeners names neither rather than the larger one as if it were
/// the whole story.
const SHARED_TENTHS: usize = 9;

/// The place shared by at least `SHARED_TENTHS` of `rows` (one stack's), placed among all
/// the process's fds (`cx`) except that a directory counts as holding one path when it does
/// among `rows`: a stack that opens one file is named by it, whatever else is open beside.
fn shared_place<K>(cx: &Context, rows: &[&Observed<K>]) -> Option<SharedPlace> {
    let cx = cx.within(rows.iter().map(|r| r.pointing()));
    let mut counts: BTreeMap<(FdKind, Place), usize> = BTreeMap::new();
    for r in rows {
        *counts.entry((r.kind, cx.place(r.pointing()))).or_insert(0) += 1;
    }
    let ((kind, place), count) = counts.into_iter().max_by_key(|(_, n)| *n)?;
    (place.is_known() && count * 10 >= rows.len() * SHARED_TENTHS).then_some(SharedPlace {
        kind,
        place,
        count,
    })
}

fn count_by<T: Ord>(items: impl Iterator<Item = T>) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

fn states<'a, K: 'a>(rows: impl Iterator<Item = &'a Observed<K>>) -> BTreeMap<Word, usize> {
    count_by(rows.filter_map(|r| r.socket.as_ref()?.tcp_state.clone()))
}

/// One group of stacks: its smallest key, its frames (that key's), its rows.
type Merged<'a, K> = (K, Vec<Frame>, Vec<&'a Observed<K>>);

impl Report {
    /// Sets the rows, the stacks (each resolved once by `frames_of`) and the counts from the
    /// fds observed, in their order. Stacks whose frames name the same places (`Frame::site`)
    /// are one group: a runtime's walks through one line of its program differ in the
    /// runtime's own code (CPython's generic and specialised calls, a JVM's interpreted and
    /// compiled frames), which the resolved frames leave out.
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
        let mut merged: Vec<Merged<K>> = Vec::new();
        let mut by_sites: BTreeMap<Vec<String>, usize> = BTreeMap::new();
        let mut group_of: BTreeMap<K, usize> = BTreeMap::new();
        for (key, rows) in by_stack {
            let frames = frames_of(key);
            let sites: Vec<String> = frames.iter().map(Frame::site).collect();
            // Stacks that resolved to nothing stay apart: nothing says they are one place.
            let same = (!sites.is_empty()).then(|| by_sites.get(&sites)).flatten();
            let at = match same {
                Some(&i) => {
                    merged[i].2.extend(rows);
                    i
                }
                None => {
                    if !sites.is_empty() {
                        by_sites.insert(sites, merged.len());
                    }
                    merged.push((key, frames, rows));
                    merged.len() - 1
                }
            };
            group_of.insert(key, at);
        }
        let everywhere = Context::of(observed.iter().map(Observed::pointing));
        let mut groups: Vec<(K, usize, Stack)> = merged
            .into_iter()
            .enumerate()
            .map(|(at, (key, frames, rs))| {
                let ages = || rs.iter().filter_map(|r| r.age_ms);
                let stack = Stack {
                    count: rs.len(),
                    streams: rs.iter().filter(|r| r.stream).count(),
                    by_kind: count_by(rs.iter().map(|r| r.kind)),
                    tcp_states: states(rs.iter().copied()),
                    oldest_ms: ages().max().unwrap_or(0),
                    newest_ms: ages().min().unwrap_or(0),
                    place: shared_place(&everywhere, &rs),
                    frames,
                    ..Stack::default()
                };
                (key, at, stack)
            })
            .collect();
        groups.sort_by(|a, b| b.2.count.cmp(&a.2.count).then(a.0.cmp(&b.0)));
        // Each group's id, looked up once per row: a search of the groups for every row made
        // a report of many fds and many stacks quadratic.
        let mut ids = vec![0; groups.len()];
        for (id, (_, at, stack)) in groups.iter_mut().enumerate() {
            stack.id = id;
            ids[*at] = id;
        }
        let ids: BTreeMap<K, usize> = group_of.into_iter().map(|(k, at)| (k, ids[at])).collect();
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
                place: Some(everywhere.place(r.pointing())),
            })
            .collect();
        self.stacks = groups.into_iter().map(|(_, _, s)| s).collect();
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
            socket: None,
            kernel_path: Some("/dev/null".into()),
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

    /// A runtime frame: what the library resolves a Python frame to.
    fn py(function: &str, line: u32) -> Frame {
        Frame {
            module: Some("python".into()),
            function: Some(function.into()),
            file: Some("/srv/app.py".into()),
            line: Some(line),
            ..Frame::default()
        }
    }

    #[test]
    fn stacks_that_name_the_same_places_are_one_group() {
        // Stacks 1 and 2: one Python line reached through two interpreter paths (generic and
        // specialised calls), which resolve to the same frames; 3: another line; 4 and 5:
        // nothing resolved, so nothing says they are one place.
        let rows: Vec<_> = [(3, 1), (4, 2), (5, 2), (6, 3), (7, 4), (8, 5)]
            .into_iter()
            .map(|(fd, s)| seen(fd, Some(s), 0))
            .collect();
        let mut r = Report::default();
        r.fill(&rows, |s| match s {
            1 | 2 => vec![py("read_setting", 6), py("main", 16)],
            3 => vec![py("read_setting", 7), py("main", 16)],
            _ => Vec::new(),
        });
        let counts: Vec<usize> = r.stacks.iter().map(|s| s.count).collect();
        assert_eq!(counts, [3, 1, 1, 1]);
        assert_eq!(r.stacks[0].frames[0].line, Some(6));
        let stack_of = |fd: i32| r.fds.iter().find(|f| f.fd == fd).unwrap().stack;
        assert_eq!([stack_of(3), stack_of(4), stack_of(5)], [Some(0); 3]);
        assert_ne!(stack_of(7), stack_of(8));
        assert_eq!(r.stacks[1].frames[0].line, Some(7));
        // Native frames without a line stay apart by their offsets.
        let native = |offset| Frame {
            addr: 0x1000 + offset,
            module: Some("/srv/app".into()),
            offset: Some(offset),
            ..Frame::default()
        };
        r.fill(&rows[..2], |s| vec![native(u64::from(s))]);
        assert_eq!(r.stacks.len(), 2);
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
        a.socket = Some(SocketDesc::tcp(
            "10.0.0.1:40000",
            Some("10.0.0.5:6379"),
            "CLOSE_WAIT",
        ));
        a.call = Call::Untracked;
        let mut r = Report::default();
        r.fill(&[a, seen(4, None, 0)], |_: u32| Vec::new());
        assert_eq!(r.untracked, 1);
        assert_eq!(r.tcp_states[&Word::Borrowed("CLOSE_WAIT")], 1);
        assert!(r.stacks.is_empty());
    }

    /// Connections from `stack` to `peers[i]` for fds 10.., in `state`.
    fn dialed(stack: u32, peers: &[&str], state: &'static str) -> Vec<Observed<u32>> {
        peers
            .iter()
            .enumerate()
            .map(|(i, peer)| {
                let mut r = seen(10 + i as i32, Some(stack), 0);
                r.kind = FdKind::Socket;
                r.kernel_path = None;
                r.socket = Some(SocketDesc::tcp(
                    &format!("10.0.0.1:{}", 40000 + i),
                    Some(peer),
                    state,
                ));
                r
            })
            .collect()
    }

    fn place_of(r: &Report) -> Option<(&'static str, &str, usize)> {
        let p = r.stacks[0].place.as_ref()?;
        Some((p.place.by, p.place.key.as_str(), p.count))
    }

    #[test]
    fn a_stack_is_placed_where_nine_tenths_of_its_fds_point() {
        let mut peers = vec!["10.0.0.5:6379"; 9];
        peers.push("10.0.0.6:6379");
        let mut r = Report::default();
        r.fill(&dialed(1, &peers, "ESTABLISHED"), |_| Vec::new());
        assert_eq!(place_of(&r), Some(("peer", "10.0.0.5:6379", 9)));
        assert_eq!(r.fds[0].place.as_ref().unwrap().key, "10.0.0.5:6379");
        // 8 of 10: no place.
        peers[8] = "10.0.0.6:6379";
        r.fill(&dialed(1, &peers, "ESTABLISHED"), |_| Vec::new());
        assert_eq!(place_of(&r), None);
        // Pipes point nowhere to name.
        let mut pipe = seen(3, Some(1), 0);
        pipe.kind = FdKind::Pipe;
        pipe.kernel_path = None;
        r.fill(&[pipe], |_| Vec::new());
        assert_eq!(place_of(&r), None);
    }

    #[test]
    fn accepted_connections_and_files_are_placed_among_the_process_fds() {
        let mut rows = dialed(1, &["10.0.0.9:50000", "10.0.0.9:50001"], "CLOSE_WAIT");
        for r in &mut rows {
            r.socket.as_mut().unwrap().local = Some("10.0.0.1:8080".into());
        }
        let mut listener = seen(3, Some(2), 0);
        listener.kind = FdKind::Socket;
        listener.socket = Some(SocketDesc::tcp("0.0.0.0:8080", None, "LISTEN"));
        rows.push(listener);
        // The stack's file is the only one it opened in /etc/, though not the process's.
        let mut other = seen(4, None, 0);
        other.kernel_path = Some("/etc/hosts".into());
        let mut hostname = seen(5, Some(3), 0);
        hostname.kernel_path = Some("/etc/hostname".into());
        rows.extend([other, hostname]);
        let mut r = Report::default();
        r.fill(&rows, |_| Vec::new());
        assert_eq!(place_of(&r), Some(("accepted", "10.0.0.1:8080", 2)));
        let file = r
            .stacks
            .iter()
            .find(|s| s.by_kind.contains_key(&FdKind::File));
        let p = file.unwrap().place.as_ref().unwrap();
        assert_eq!(
            (p.place.by, p.place.key.as_str()),
            ("path", "/etc/hostname")
        );
        // Without a stack, a row is placed among all the fds.
        assert_eq!(r.fds[3].place.as_ref().unwrap().key, "/etc/");
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
        sock.socket = Some(SocketDesc::unlisted(Some("TCP")));
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
        expected.stacks[0].place = None;
        for row in &mut expected.fds {
            row.place = None;
        }
        assert_eq!(**back, expected);
    }
}
