//! How a process's fds add up: counts by kind and TCP state, groups by where they point (a
//! directory, a peer, a local port), and the first line that says how bad it is.

use std::collections::BTreeMap;

use fdguard_core::kind::{FdKind, kind_words};
use fdguard_core::place::{Context, Place, words};
use fdguard_core::report::{Limit, Word};
use fdguard_core::snapshot::{FdEntry, Group, Summary};

use crate::units::{count, percent};

/// "to 10.0.0.5:6379", "in /var/log/app/": where a group's fds point.
pub fn place(g: &Group) -> String {
    words(g.kind, &g.by, &g.key)
}

/// "998 CLOSE_WAIT to 10.0.0.5:6379" or "12 in /tmp/ (3 ESTABLISHED)".
pub fn phrase(g: &Group) -> String {
    let place = place(g);
    match g.tcp_states.iter().max_by_key(|(_, n)| **n) {
        Some((state, n)) if *n == g.count && g.by != "unconnected" => {
            format!("{} {state} {place}", count(g.count))
        }
        Some((state, n)) if g.by != "unconnected" => {
            format!("{} {place} ({} {state})", count(g.count), count(*n))
        }
        _ => format!("{} {place}", count(g.count)),
    }
}

/// "socket 900, file 20, pipe 1": counts by kind, largest first, then by name.
pub fn kind_counts(by_kind: &BTreeMap<FdKind, usize>) -> String {
    let mut kinds: Vec<(&str, usize)> = by_kind.iter().map(|(k, n)| (k.name(), *n)).collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kinds: Vec<String> = kinds
        .iter()
        .map(|(k, n)| format!("{k} {}", count(*n)))
        .collect();
    kinds.join(", ")
}

/// Counts and groups, largest group first.
pub fn summarize(fds: &[FdEntry]) -> Summary {
    let mut sum = Summary::default();
    let cx = Context::of(fds.iter().map(FdEntry::pointing));
    // Keyed by the kind's name: groups of equal size stay in the order of their names.
    let mut groups: BTreeMap<(&'static str, &'static str, String), Group> = BTreeMap::new();
    for e in fds {
        *sum.by_kind.entry(e.kind).or_default() += 1;
        if let Some(state) = e.tcp_state() {
            *sum.tcp_states.entry(state.clone()).or_default() += 1;
        }
        let Place { by, key } = cx.place(e.pointing());
        let g = groups
            .entry((e.kind.name(), by, key.clone()))
            .or_insert_with(|| Group {
                kind: e.kind,
                by: Word::Borrowed(by),
                key,
                count: 0,
                tcp_states: BTreeMap::new(),
            });
        g.count += 1;
        if let Some(state) = e.tcp_state() {
            *g.tcp_states.entry(state.clone()).or_default() += 1;
        }
    }
    sum.groups = groups.into_values().collect();
    sum.groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    sum
}

/// `1,019 of 1,024 fds open (99%) in pid 42 (./server); 1,003 sockets, 998 CLOSE_WAIT to
/// 10.0.0.5:6379`: how close to the limit, the largest kind, and where most of it points.
pub fn headline(pid: i32, name: &str, limit: Limit, open: usize, sum: &Summary) -> String {
    let mut s = match limit.soft {
        Some(soft) => format!(
            "{} of {} fds open ({}) in pid {pid} ({name})",
            count(open),
            count(soft as usize),
            percent(open as u64, soft)
        ),
        None => format!("{} fds open (no limit) in pid {pid} ({name})", count(open)),
    };
    // Of kinds with as many fds, the last by name.
    let top_kind = sum.by_kind.iter().max_by_key(|(k, n)| (**n, k.name()));
    if let Some((kind, n)) = top_kind {
        s.push_str(&format!("; {} {}", count(*n), kind_words(*kind, *n, false)));
        let top_group = sum.groups.iter().find(|g| g.kind == *kind);
        if let Some(g) = top_group.filter(|g| g.by != "kind") {
            s.push_str(", ");
            s.push_str(&phrase(g));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdguard_core::snapshot::SocketFacts;
    use fdguard_core::sockdesc::SocketDesc;

    fn sock(fd: i32, local: &str, peer: Option<&str>, state: &'static str) -> FdEntry {
        FdEntry {
            fd,
            kind: FdKind::Socket,
            socket: Some(SocketFacts {
                desc: SocketDesc {
                    proto: "tcp".into(),
                    sock_type: "stream".into(),
                    local: Some(local.into()),
                    peer: peer.map(String::from),
                    tcp_state: Some(state.into()),
                },
                in_tables: true,
                ..SocketFacts::default()
            }),
            ..FdEntry::default()
        }
    }

    fn file(fd: i32, path: &str) -> FdEntry {
        FdEntry {
            fd,
            kind: FdKind::File,
            desc: path.into(),
            path: Some(path.into()),
            ..FdEntry::default()
        }
    }

    #[test]
    fn the_headline_names_the_kind_and_the_place() {
        let mut fds: Vec<FdEntry> = (0..998)
            .map(|i| {
                sock(
                    10 + i,
                    &format!("10.0.0.1:{}", 40000 + i),
                    Some("10.0.0.5:6379"),
                    "CLOSE_WAIT",
                )
            })
            .collect();
        fds.extend((0..5).map(|i| {
            sock(
                2000 + i,
                "10.0.0.1:8080",
                Some(&format!("10.0.0.9:{}", 50000 + i)),
                "ESTABLISHED",
            )
        }));
        fds.push(sock(3, "0.0.0.0:8080", None, "LISTEN"));
        fds.extend((0..15).map(|i| file(3000 + i, &format!("/var/log/app/{i}.log"))));
        fds.extend((0..3).map(|i| file(4000 + i, "/etc/hostname")));
        let sum = summarize(&fds);
        assert_eq!(sum.by_kind[&FdKind::Socket], 1004);
        assert_eq!(sum.tcp_states["CLOSE_WAIT"], 998);
        assert_eq!(sum.groups[0].by, "peer");
        assert_eq!(sum.groups[1].by, "dir");
        assert_eq!(sum.groups[1].key, "/var/log/app/");
        let one = sum.groups.iter().find(|g| g.by == "path").unwrap();
        assert_eq!(
            (one.key.as_str(), place(one)),
            ("/etc/hostname", "of /etc/hostname".into())
        );
        // Connections a listener accepted group by the local address, not by each client.
        let accepted = sum.groups.iter().find(|g| g.by == "accepted").unwrap();
        assert_eq!(
            (accepted.key.as_str(), accepted.count),
            ("10.0.0.1:8080", 5)
        );
        let limit = Limit {
            soft: Some(1024),
            hard: Some(4096),
        };
        assert_eq!(
            headline(42, "./server", limit, 1019, &sum),
            "1,019 of 1,024 fds open (99%) in pid 42 (./server); 1,004 sockets, \
             998 CLOSE_WAIT to 10.0.0.5:6379"
        );
    }

    #[test]
    fn unlimited_and_empty() {
        let sum = summarize(&[]);
        assert_eq!(
            headline(1, "x", Limit::default(), 0, &sum),
            "0 fds open (no limit) in pid 1 (x)"
        );
    }
}
