//! The process's sockets as its network namespace lists them (`/proc/PID/net/tcp`, `tcp6`,
//! `udp`, `udp6`, `unix`), by inode, so that an fd's `socket:[N]` link finds its addresses and
//! TCP state without touching the socket.

use std::collections::HashMap;
use std::net::SocketAddr;

use procfs::net::{TcpNetEntry, UdpNetEntry, UnixNetEntry, UnixState};
use procfs::process::Process;

use fdguard_core::snapshot::SocketFacts;
use fdguard_core::sockdesc::{SocketDesc, tcp_state_name};

/// Sockets by inode.
#[derive(Default)]
pub struct SocketTables {
    by_inode: HashMap<u64, SocketFacts>,
}

/// `127.0.0.1:80`, `[::1]:80`: the report's spelling (no IPv6 scope).
fn addr(a: &SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// The remote end, when there is one (a listener's or an unconnected socket's is `*:0`).
fn peer(a: &SocketAddr) -> Option<String> {
    (a.port() != 0 || !a.ip().is_unspecified()).then(|| addr(a))
}

/// A socket's facts; `in_tables`: listed in a `/proc/PID/net` table.
fn facts(
    proto: &str,
    sock_type: &'static str,
    (local, peer): (Option<String>, Option<String>),
    tcp_state: Option<&'static str>,
    in_tables: bool,
) -> SocketFacts {
    SocketFacts {
        desc: SocketDesc {
            proto: proto.to_string(),
            sock_type: sock_type.into(),
            local,
            peer,
            tcp_state: tcp_state.map(Into::into),
        },
        in_tables,
        ..SocketFacts::default()
    }
}

/// A TCP socket's facts; a listener's accept queue from the diagnostics (`queues`), or
/// without them (another network namespace) from the table, whose `rx_queue` of a listener
/// is its accept queue's length too (its `tx_queue` is not the backlog: only the
/// diagnostics give that).
fn tcp_facts(proto: &str, e: &TcpNetEntry, queues: &HashMap<u64, (u32, u32)>) -> SocketFacts {
    let state = tcp_state_name(e.state.to_u8());
    let listening = state == Some("LISTEN");
    let remote = if listening {
        None
    } else {
        peer(&e.remote_address)
    };
    let ends = (Some(addr(&e.local_address)), remote);
    let mut f = facts(proto, "stream", ends, state, true);
    if listening {
        let (queue, backlog) = match queues.get(&e.inode) {
            Some((q, b)) => (*q, Some(*b)),
            None => (e.rx_queue, None),
        };
        f.accept_queue = Some(queue);
        f.backlog = backlog;
    }
    f
}

fn udp_facts(proto: &str, e: &UdpNetEntry) -> SocketFacts {
    let ends = (Some(addr(&e.local_address)), peer(&e.remote_address));
    facts(proto, "dgram", ends, None, true)
}

fn unix_type(t: u16) -> &'static str {
    match i32::from(t) {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "dgram",
        libc::SOCK_SEQPACKET => "seqpacket",
        _ => "other",
    }
}

/// A unix socket's own name as the report spells it: a path, `@abstract`, or `(unnamed)`.
fn unix_name(e: &UnixNetEntry) -> String {
    e.path.as_ref().map_or_else(
        || "(unnamed)".to_string(),
        |p| p.to_string_lossy().into_owned(),
    )
}

impl SocketTables {
    /// Reads the tables of `process`'s network namespace, with what the diagnostics add:
    /// `/proc/net/unix` does not say who is at the other end, `/proc/net/tcp` leaves out
    /// bound sockets that neither listen nor connect.
    pub fn load(process: &Process, diag: &Diagnostics) -> SocketTables {
        let mut t = SocketTables::default();
        for (proto, entries) in [("tcp", process.tcp()), ("tcp6", process.tcp6())] {
            for e in entries.unwrap_or_default().iter().filter(|e| e.inode != 0) {
                let facts = tcp_facts(proto, e, &diag.listen_queues);
                t.by_inode.insert(e.inode, facts);
            }
        }
        for (proto, entries) in [("udp", process.udp()), ("udp6", process.udp6())] {
            for e in entries.unwrap_or_default().iter().filter(|e| e.inode != 0) {
                t.by_inode.insert(e.inode, udp_facts(proto, e));
            }
        }
        let unix = process.unix().unwrap_or_default();
        let names: HashMap<u64, String> = unix.iter().map(|e| (e.inode, unix_name(e))).collect();
        for e in &unix {
            let connected = matches!(e.state, UnixState::CONNECTED);
            let peer = diag.unix_peers.get(&e.inode).map(|p| {
                names
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| "(unnamed)".to_string())
            });
            // Connected, but the diagnostics could not say to whom: "?".
            let ends = (
                Some(unix_name(e)),
                peer.or_else(|| connected.then(|| "?".to_string())),
            );
            let unix = facts("unix", unix_type(e.socket_type), ends, None, true);
            t.by_inode.insert(e.inode, unix);
        }
        for (inode, local) in &diag.bound_tcp {
            let proto = if local.starts_with('[') {
                "tcp6"
            } else {
                "tcp"
            };
            t.by_inode.entry(*inode).or_insert_with(|| {
                facts(
                    proto,
                    "stream",
                    (Some(local.clone()), None),
                    Some("CLOSE"),
                    false,
                )
            });
        }
        t
    }

    pub fn get(&self, inode: u64) -> Option<&SocketFacts> {
        self.by_inode.get(&inode)
    }
}

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_PEER: u32 = 4;
const UNIX_DIAG_PEER: u16 = 2;
/// The diagnostics-only state of bound, inactive TCP sockets (Linux 6.10).
const TCP_BOUND_INACTIVE: u32 = 13;
/// `TCP_LISTEN` of include/net/tcp_states.h.
const TCP_LISTEN: u32 = 10;

/// A `SOCK_DIAG_BY_FAMILY` dump request with `body` (the family's request struct).
fn diag_request(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDR + body.len());
    m.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    m.extend_from_slice(body);
    m
}

/// Every unix socket with its peer (struct `unix_diag_req`).
fn unix_diag_request() -> Vec<u8> {
    let mut b = vec![libc::AF_UNIX as u8, 0, 0, 0];
    b.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    b.extend_from_slice(&0u32.to_ne_bytes()); // any inode
    b.extend_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    b.extend_from_slice(&[0xff; 8]); // no cookie
    diag_request(&b)
}

/// TCP sockets of `family` in `state` (struct `inet_diag_req_v2`).
fn tcp_request(family: i32, state: u32) -> Vec<u8> {
    let mut b = vec![family as u8, libc::IPPROTO_TCP as u8, 0, 0];
    b.extend_from_slice(&(1u32 << state).to_ne_bytes());
    b.extend_from_slice(&[0; 40]); // ports, addresses, interface
    b.extend_from_slice(&[0xff; 8]); // no cookie
    diag_request(&b)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The netlink messages of one datagram: (type, payload).
fn messages(datagram: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = u32_at(datagram, at)? as usize;
        let ty = u16_at(datagram, at + 4)?;
        let payload = datagram.get(at + NLMSG_HDR..at + len)?;
        at += len.max(NLMSG_HDR).next_multiple_of(4);
        Some((ty, payload))
    })
}

fn ends_dump(datagram: &[u8]) -> bool {
    messages(datagram).any(|(ty, _)| ty == NLMSG_DONE || ty == NLMSG_ERROR)
}

/// Adds the (inode, peer inode) pairs of one answer datagram to `peers`.
fn parse_unix_diag(datagram: &[u8], peers: &mut HashMap<u64, u64>) {
    let answers = messages(datagram).filter(|(ty, _)| *ty == SOCK_DIAG_BY_FAMILY);
    for msg in answers.map(|(_, msg)| msg) {
        // struct unix_diag_msg: family, type, state, pad, inode, cookie[2]; then attributes.
        let Some(inode) = u32_at(msg, 4) else {
            continue;
        };
        let mut at = 16;
        while let (Some(len), Some(kind)) = (u16_at(msg, at), u16_at(msg, at + 2)) {
            let len = len as usize;
            if len < 4 {
                break;
            }
            if let Some(peer) = u32_at(msg, at + 4).filter(|_| kind == UNIX_DIAG_PEER) {
                peers.insert(u64::from(inode), u64::from(peer));
            }
            at += len.next_multiple_of(4);
        }
    }
}

/// The answers (struct `inet_diag_msg`) of one datagram, with their inodes.
fn inet_answers(datagram: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    messages(datagram)
        .filter(|(ty, _)| *ty == SOCK_DIAG_BY_FAMILY)
        .filter_map(|(_, msg)| Some((u64::from(u32_at(msg, 68)?), msg)))
}

/// Adds the accept queue and backlog of each listener of one answer datagram to `queues`,
/// by inode: for a listener, the kernel's `idiag_rqueue` is the accept queue's length
/// (`sk_ack_backlog`) and `idiag_wqueue` its bound, the backlog `listen` was given
/// (`sk_max_ack_backlog`, at most `net.core.somaxconn`), as `ss -l` shows them.
fn parse_listen_queues(datagram: &[u8], queues: &mut HashMap<u64, (u32, u32)>) {
    for (inode, msg) in inet_answers(datagram) {
        if let (Some(rqueue), Some(wqueue)) = (u32_at(msg, 56), u32_at(msg, 60)) {
            queues.insert(inode, (rqueue, wqueue));
        }
    }
}

/// Adds the local address of each bound, inactive TCP socket of one answer datagram to
/// `bound`, by inode.
fn parse_bound_inactive(datagram: &[u8], bound: &mut HashMap<u64, String>) {
    for (inode, msg) in inet_answers(datagram) {
        let (Some(family), Some(port)) = (msg.first(), msg.get(4..6)) else {
            continue;
        };
        let port = u16::from_be_bytes([port[0], port[1]]);
        let ip: Option<std::net::IpAddr> = match i32::from(*family) {
            libc::AF_INET => msg
                .get(8..12)
                .map(|b| std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()),
            libc::AF_INET6 => msg
                .get(8..24)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(|b| std::net::Ipv6Addr::from(b).into()),
            _ => None,
        };
        if let Some(ip) = ip {
            bound.insert(inode, addr(&SocketAddr::new(ip, port)));
        }
    }
}

/// What the kernel's socket diagnostics add to the `/proc/net` tables, asked once.
#[derive(Default)]
pub struct Diagnostics {
    /// A connected unix socket's peer, by inode.
    pub unix_peers: HashMap<u64, u64>,
    /// The local address of a bound, inactive TCP socket, by inode.
    pub bound_tcp: HashMap<u64, String>,
    /// A TCP listener's accept queue and backlog, by inode.
    pub listen_queues: HashMap<u64, (u32, u32)>,
}

impl Diagnostics {
    /// Asks the kernel about `pid`'s network namespace; empty if that is not this command's
    /// namespace (netlink answers for its own) or netlink is not available.
    pub fn of(pid: i32) -> Diagnostics {
        let mut d = Diagnostics::default();
        if !crate::os::same_net_namespace(pid) {
            return d;
        }
        let dump = |req: Vec<u8>| crate::os::sock_diag_dump(&req, ends_dump).unwrap_or_default();
        for datagram in dump(unix_diag_request()) {
            parse_unix_diag(&datagram, &mut d.unix_peers);
        }
        for family in [libc::AF_INET, libc::AF_INET6] {
            for datagram in dump(tcp_request(family, TCP_BOUND_INACTIVE)) {
                parse_bound_inactive(&datagram, &mut d.bound_tcp);
            }
            for datagram in dump(tcp_request(family, TCP_LISTEN)) {
                parse_listen_queues(&datagram, &mut d.listen_queues);
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_peers_of_a_socketpair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let ino = |s: &std::os::unix::net::UnixStream| {
            std::os::unix::fs::MetadataExt::ino(
                &std::fs::metadata(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(s)
                ))
                .unwrap(),
            )
        };
        let peers = Diagnostics::of(std::process::id() as i32).unix_peers;
        assert_eq!(peers.get(&ino(&a)), Some(&ino(&b)));
        assert_eq!(peers.get(&ino(&b)), Some(&ino(&a)));
    }

    #[test]
    fn finds_the_port_of_a_bound_inactive_socket() {
        use std::io::BufRead;
        let script = "import os,socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\n\
                      print(os.fstat(s.fileno()).st_ino, s.getsockname()[1], flush=True)\n\
                      sys.stdin.read()";
        let mut py = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(py.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let (ino, bound) = line.trim().split_once(' ').unwrap();
        let d = Diagnostics::of(py.id() as i32);
        let _ = py.kill();
        let _ = py.wait();
        let local = d.bound_tcp.get(&ino.parse().unwrap());
        assert_eq!(local, Some(&format!("127.0.0.1:{bound}")));
    }

    #[test]
    fn finds_the_accept_queue_and_backlog_of_a_listener() {
        // std listens with a backlog of 128 (at most net.core.somaxconn).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _clients: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap())
            .collect();
        let ino = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&l)
            ))
            .unwrap(),
        );
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let queues = Diagnostics::of(std::process::id() as i32).listen_queues;
        assert_eq!(queues.get(&ino), Some(&(2, somaxconn.min(128))));
    }

    #[test]
    fn walks_messages_and_attributes() {
        let mut msg = vec![0u8; 16];
        msg[4..8].copy_from_slice(&42u32.to_ne_bytes());
        msg.extend_from_slice(&8u16.to_ne_bytes());
        msg.extend_from_slice(&UNIX_DIAG_PEER.to_ne_bytes());
        msg.extend_from_slice(&43u32.to_ne_bytes());
        let mut dgram = Vec::new();
        dgram.extend_from_slice(&((NLMSG_HDR + msg.len()) as u32).to_ne_bytes());
        dgram.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        dgram.extend_from_slice(&[0u8; 10]);
        dgram.extend_from_slice(&msg);
        let mut peers = HashMap::new();
        parse_unix_diag(&dgram, &mut peers);
        assert_eq!(peers.get(&42), Some(&43));
        assert!(!ends_dump(&dgram));
        // A truncated datagram is left alone, not read past its end.
        parse_unix_diag(&dgram[..20], &mut peers);
    }
}
