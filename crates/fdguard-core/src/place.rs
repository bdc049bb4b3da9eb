//! Where an fd points: the place that fds which belong together share (a directory or one
//! path for files, the peer of connections made, the local address of connections a listener
//! accepted, ...). `inspect` groups a process's fds by it; the report names the place a
//! stack's fds share. Pure: what the kernel said of each fd comes in.

use std::collections::{BTreeMap, BTreeSet};

use crate::kind::FdKind;
use crate::sockdesc::SocketDesc;

/// What placing an fd needs to know of it, borrowed from whoever recorded it (`inspect`'s
/// `FdEntry`, the library's `Observed`).
#[derive(Clone, Copy, Debug)]
pub struct Pointing<'a> {
    pub kind: FdKind,
    /// The kernel's path, for files and directories.
    pub path: Option<&'a str>,
    pub socket: Option<&'a SocketDesc>,
    /// For a socket: listed in a `/proc/PID/net` table; false for what lsof calls "can't
    /// identify protocol" (created, perhaps failed to connect, never closed).
    pub listed: bool,
}

/// Where one fd points. `by` says what `key` is: `dir` (of files), `path` (the one file open
/// in that directory), `peer` (connected to), `accepted` (connections a listener of this
/// process accepted, by local address), `listen`, `local` (a bound, unconnected socket),
/// `unconnected` (a socket in no table: lsof's "can't identify protocol"), or `kind` (nothing
/// more to say than the kind). These are the `by` values of `inspect`'s groups (schema 1).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub by: &'static str,
    pub key: String,
}

impl Place {
    /// Whether the place says more than the fd's kind.
    pub fn is_known(&self) -> bool {
        self.by != "kind"
    }

    /// Whether the words already say the TCP state (a listener; an unconnected socket, whose
    /// state is CLOSE): a line naming the place then leaves the state out.
    pub fn says_state(&self) -> bool {
        matches!(self.by, "listen" | "unconnected")
    }

    /// Where the place is, after the fds' kind has been named: "sockets to 10.0.0.5:6379",
    /// "files in /var/log/app/", "sockets (unix stream)", "pipes" (nothing more to say).
    /// Differs from `words`, which heads a column, only where a key without a preposition
    /// would read as part of the kind's name.
    pub fn after_kind(&self, kind: FdKind) -> String {
        match self.by {
            "unconnected" => format!("never connected or failed to connect ({})", self.key),
            "kind" if self.key != kind.name() => format!("({})", self.key),
            _ => words(kind, self.by, &self.key),
        }
    }
}

/// "to 10.0.0.5:6379", "in /var/log/app/": where fds of `kind` placed `by` `key` point, as
/// `inspect` lists its groups.
pub fn words(kind: FdKind, by: &str, key: &str) -> String {
    match by {
        "dir" => format!("in {key}"),
        "path" => format!("of {key}"),
        "peer" => format!("to {key}"),
        "accepted" => format!("accepted on {key}"),
        "listen" => format!("listening on {key}"),
        "local" => format!("on {key}"),
        "unconnected" => format!(
            "{key}, never connected or failed to connect (lsof: \"can't identify protocol\")"
        ),
        _ if key == kind.name() => String::new(),
        _ => key.to_string(),
    }
}

fn parent_dir(path: &str) -> String {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    match path.rfind('/') {
        Some(i) => path[..=i].to_string(),
        None => path.to_string(),
    }
}

fn port(addr: &str) -> Option<&str> {
    addr.rsplit_once(':').map(|(_, p)| p)
}

/// Directories in which every file of `fds` is the same one.
fn one_path_dirs<'a>(fds: impl Iterator<Item = Pointing<'a>>) -> BTreeSet<String> {
    let mut paths_in: BTreeMap<String, (&str, bool)> = BTreeMap::new();
    for p in fds.filter_map(|e| e.path) {
        let entry = paths_in.entry(parent_dir(p)).or_insert((p, false));
        entry.1 |= entry.0 != p;
    }
    paths_in
        .into_iter()
        .filter(|(_, (_, several))| !several)
        .map(|(dir, _)| dir)
        .collect()
}

/// What placing one fd needs to know of the others.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Local ports with a listener: connections on them were accepted.
    listening_ports: BTreeSet<String>,
    /// Directories in which every open file is the same one: placed by that path.
    one_path_dirs: BTreeSet<String>,
}

impl Context {
    /// For placing fds among all of `fds`.
    pub fn of<'a>(fds: impl Iterator<Item = Pointing<'a>> + Clone) -> Context {
        let listening_ports = fds
            .clone()
            .filter_map(|e| e.socket)
            .filter(|s| s.tcp_state.as_deref() == Some("LISTEN"))
            .filter_map(|s| s.local.as_deref().and_then(port).map(str::to_string))
            .collect();
        Context {
            listening_ports,
            one_path_dirs: one_path_dirs(fds),
        }
    }

    /// The same listeners, with a directory judged to hold one path when it does among
    /// `files` (a part of the fds `of` saw).
    pub fn within<'a>(&self, files: impl Iterator<Item = Pointing<'a>>) -> Context {
        Context {
            listening_ports: self.listening_ports.clone(),
            one_path_dirs: one_path_dirs(files),
        }
    }

    /// Where `e` points.
    pub fn place(&self, e: Pointing<'_>) -> Place {
        let place = |by, key: String| Place { by, key };
        let Some(s) = e.socket else {
            return match (e.kind, e.path) {
                (FdKind::File | FdKind::Dir, Some(p))
                    if self.one_path_dirs.contains(&parent_dir(p)) =>
                {
                    place("path", p.to_string())
                }
                (FdKind::File | FdKind::Dir, Some(p)) => place("dir", parent_dir(p)),
                (kind, _) => place("kind", kind.name().to_string()),
            };
        };
        let named = |a: &Option<String>| {
            a.as_deref()
                .filter(|a| *a != "(unnamed)" && *a != "?")
                .map(str::to_string)
        };
        if !e.listed {
            return place("unconnected", s.proto.clone());
        }
        if s.tcp_state.as_deref() == Some("LISTEN") {
            return place("listen", s.local.clone().unwrap_or_default());
        }
        let local_port = s.local.as_deref().and_then(port).map(str::to_string);
        if s.proto != "unix" && s.connected() {
            if local_port.is_some_and(|p| self.listening_ports.contains(&p)) {
                return place("accepted", s.local.clone().unwrap_or_default());
            }
            return place("peer", s.peer.clone().unwrap_or_default());
        }
        if let Some(local) = named(&s.local) {
            return place("local", local);
        }
        if let Some(peer) = named(&s.peer) {
            return place("peer", peer);
        }
        place("kind", format!("{} {}", s.proto, s.sock_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(s: &SocketDesc) -> Pointing<'_> {
        Pointing {
            kind: FdKind::Socket,
            path: None,
            socket: Some(s),
            listed: true,
        }
    }

    fn file(path: &str) -> Pointing<'_> {
        Pointing {
            kind: FdKind::File,
            path: Some(path),
            socket: None,
            listed: false,
        }
    }

    #[test]
    fn sockets_by_peer_accepted_listener_and_unconnected() {
        let listener = SocketDesc::tcp("0.0.0.0:8080", None, "LISTEN");
        let accepted = SocketDesc::tcp("10.0.0.1:8080", Some("10.0.0.9:50000"), "ESTABLISHED");
        let dialed = SocketDesc::tcp("10.0.0.1:40000", Some("10.0.0.5:6379"), "CLOSE_WAIT");
        let failed = SocketDesc::unlisted(Some("TCP"));
        let all = [sock(&listener), sock(&accepted), sock(&dialed)];
        let cx = Context::of(all.iter().copied());
        let at = |p: Pointing| {
            let p = cx.place(p);
            (p.by, p.key)
        };
        assert_eq!(at(all[0]), ("listen", "0.0.0.0:8080".into()));
        assert_eq!(at(all[1]), ("accepted", "10.0.0.1:8080".into()));
        assert_eq!(at(all[2]), ("peer", "10.0.0.5:6379".into()));
        let mut unlisted = sock(&failed);
        unlisted.listed = false;
        assert_eq!(at(unlisted), ("unconnected", "tcp".into()));
        // Without the listener, the accepted connection is one to its client; judged among
        // part of the fds, the listener still counts.
        let alone = Context::of([all[1]].into_iter());
        assert_eq!(alone.place(all[1]).by, "peer");
        assert_eq!(cx.within(std::iter::empty()).place(all[1]).by, "accepted");
    }

    #[test]
    fn unix_sockets_by_their_named_end() {
        let unix = |local: &str, peer: Option<&str>| SocketDesc {
            proto: "unix".into(),
            sock_type: "stream".into(),
            local: Some(local.into()),
            peer: peer.map(String::from),
            tcp_state: None,
        };
        let client = unix("(unnamed)", Some("/run/db.sock"));
        let server = unix("/run/db.sock", Some("(unnamed)"));
        let pair = unix("(unnamed)", Some("(unnamed)"));
        let cx = Context::default();
        assert_eq!(cx.place(sock(&client)).key, "/run/db.sock");
        assert_eq!(cx.place(sock(&server)).by, "local");
        let p = cx.place(sock(&pair));
        assert_eq!(
            (p.by, p.key.as_str(), p.is_known()),
            ("kind", "unix stream", false)
        );
    }

    #[test]
    fn files_by_directory_or_the_one_path_in_it() {
        let fds = [
            file("/var/log/app/1.log"),
            file("/var/log/app/2.log"),
            file("/etc/hostname"),
            file("/etc/hostname"),
        ];
        let cx = Context::of(fds.iter().copied());
        assert_eq!(cx.place(fds[0]).key, "/var/log/app/");
        let one = cx.place(fds[2]);
        assert_eq!((one.by, one.key.as_str()), ("path", "/etc/hostname"));
        // The same file among others in its directory: placed by the directory.
        let among = Context::of([file("/etc/hosts"), fds[2]].into_iter());
        assert_eq!(among.place(fds[2]).key, "/etc/");
        // Judged among part of them: that part's only file in /etc/.
        let part = among.within([fds[2], fds[3]].into_iter());
        assert_eq!(part.place(fds[2]).by, "path");
        let pipe = Pointing {
            kind: FdKind::Pipe,
            ..fds[0]
        };
        assert!(!cx.place(pipe).is_known());
    }

    #[test]
    fn words_for_a_list_and_after_a_kind() {
        let place = |by, key: &str| Place {
            by,
            key: key.into(),
        };
        let s = FdKind::Socket;
        assert_eq!(place("dir", "/tmp/").after_kind(FdKind::File), "in /tmp/");
        assert_eq!(
            place("accepted", "0.0.0.0:80").after_kind(s),
            "accepted on 0.0.0.0:80"
        );
        let failed = place("unconnected", "tcp6");
        assert_eq!(
            words(s, failed.by, &failed.key),
            "tcp6, never connected or failed to connect (lsof: \"can't identify protocol\")"
        );
        assert_eq!(
            failed.after_kind(s),
            "never connected or failed to connect (tcp6)"
        );
        assert!(failed.says_state() && place("listen", "x").says_state());
        assert!(!place("peer", "x").says_state());
        assert_eq!(words(FdKind::Pipe, "kind", "pipe"), "");
        assert_eq!(place("kind", "pipe").after_kind(FdKind::Pipe), "");
        assert_eq!(words(s, "kind", "unix stream"), "unix stream");
        assert_eq!(place("kind", "unix stream").after_kind(s), "(unix stream)");
    }
}
