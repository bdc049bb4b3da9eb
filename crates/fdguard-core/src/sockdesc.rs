//! How reports describe a socket: the library from inside the process (`getsockname`,
//! `TCP_INFO`) and the command from outside (`/proc/PID/net`, the kernel's
//! `system.sockprotoname`) use the same words.

use serde::{Deserialize, Serialize};

use crate::report::Word;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SocketDesc {
    /// "tcp", "tcp6", "udp", "udp6", "unix", "netlink", ...
    pub proto: String,
    /// "stream", "dgram", "seqpacket", "raw" (shown for unix sockets).
    #[serde(rename = "type")]
    pub sock_type: Word,
    pub local: Option<String>,
    pub peer: Option<String>,
    /// TCP state name (ESTABLISHED, CLOSE_WAIT, LISTEN, ...).
    pub tcp_state: Option<Word>,
}

impl SocketDesc {
    pub fn connected(&self) -> bool {
        self.peer.is_some()
    }

    /// Whether a `/proc/PID/net` table lists the socket, judged from what the socket says of
    /// itself (the library asks the socket, not the tables): none lists a TCP socket in CLOSE
    /// (created, bound, or whose connect failed) nor a TCP or UDP socket without a port.
    pub fn in_tables(&self) -> bool {
        if !(self.proto.starts_with("tcp") || self.proto.starts_with("udp")) {
            return true;
        }
        let has_port = self
            .local
            .as_deref()
            .and_then(|l| l.rsplit_once(':'))
            .is_some_and(|(_, port)| port != "0");
        has_port && self.tcp_state.as_deref() != Some("CLOSE")
    }

    /// The report's protocol name and socket type for the kernel's `system.sockprotoname` of
    /// a socket that no `/proc/net` table lists: TCP ones are in CLOSE (created, or failed to
    /// connect).
    pub fn unlisted(protocol_name: Option<&str>) -> SocketDesc {
        /// `sockprotoname` values: the report's protocol and socket type for each.
        const KNOWN: &[(&str, &str, &str)] = &[
            ("TCP", "tcp", "stream"),
            ("MPTCP", "tcp", "stream"),
            ("TCPv6", "tcp6", "stream"),
            ("MPTCPv6", "tcp6", "stream"),
            ("UDP", "udp", "dgram"),
            ("UDP-Lite", "udp", "dgram"),
            ("PING", "udp", "dgram"),
            ("UDPv6", "udp6", "dgram"),
            ("UDPLITEv6", "udp6", "dgram"),
            ("PINGv6", "udp6", "dgram"),
            ("UNIX-STREAM", "unix", "stream"),
            ("UNIX", "unix", "stream"),
            ("UNIX-DGRAM", "unix", "dgram"),
            ("UNIX-SEQPACKET", "unix", "seqpacket"),
            ("RAW", "ip", "raw"),
            ("RAWv6", "ip6", "raw"),
            ("NETLINK", "netlink", "raw"),
            ("PACKET", "packet", "raw"),
        ];
        let name = protocol_name.unwrap_or("?");
        let (proto, ty) = match KNOWN.iter().find(|(n, _, _)| *n == name) {
            Some((_, proto, ty)) => (proto.to_string(), *ty),
            None => (name.to_ascii_lowercase(), "other"),
        };
        SocketDesc {
            tcp_state: proto.starts_with("tcp").then_some(Word::Borrowed("CLOSE")),
            proto,
            sock_type: Word::Borrowed(ty),
            local: None,
            peer: None,
        }
    }
}

#[cfg(test)]
impl SocketDesc {
    /// A TCP socket for tests.
    pub(crate) fn tcp(local: &str, peer: Option<&str>, state: &'static str) -> SocketDesc {
        SocketDesc {
            proto: "tcp".into(),
            sock_type: "stream".into(),
            local: Some(local.into()),
            peer: peer.map(String::from),
            tcp_state: Some(state.into()),
        }
    }
}

/// Names of the kernel's TCP states (`tcpi_state`, the `st` of `/proc/net/tcp`;
/// include/net/tcp_states.h).
pub fn tcp_state_name(state: u8) -> Option<&'static str> {
    const NAMES: [&str; 13] = [
        "",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    ];
    NAMES.get(state as usize).copied().filter(|s| !s.is_empty())
}

/// A socket in a report's `desc`: `tcp 127.0.0.1:9999 -> 127.0.0.1:40000 CLOSE_WAIT`,
/// `tcp 0.0.0.0:9999 LISTEN`, `tcp unconnected (CLOSE)`, `unix stream (unnamed) -> /run/x.sock`.
pub fn describe_socket(s: &SocketDesc) -> String {
    let mut d = s.proto.clone();
    if s.proto == "unix" {
        d.push(' ');
        d.push_str(&s.sock_type);
    }
    let connected = s.peer.is_some();
    if let Some(local) = s.local.as_deref().filter(|l| connected || !is_unbound(l)) {
        d.push(' ');
        d.push_str(local);
    }
    if let Some(peer) = &s.peer {
        d.push_str(" -> ");
        d.push_str(peer);
    }
    match s.tcp_state.as_deref() {
        Some("LISTEN") => d.push_str(" LISTEN"),
        Some(state) if connected => {
            d.push(' ');
            d.push_str(state);
        }
        Some(state) => {
            d.push_str(" unconnected (");
            d.push_str(state);
            d.push(')');
        }
        None if !connected => d.push_str(" unconnected"),
        None => {}
    }
    d
}

fn is_unbound(addr: &str) -> bool {
    addr.ends_with(":0") && (addr.starts_with("0.0.0.0") || addr.starts_with("[::]"))
        || addr == "(unnamed)"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_state_names() {
        assert_eq!(tcp_state_name(8), Some("CLOSE_WAIT"));
        assert_eq!(tcp_state_name(10), Some("LISTEN"));
        assert_eq!(tcp_state_name(0), None);
        assert_eq!(tcp_state_name(99), None);
    }

    #[test]
    fn socket_descriptions_read_like_the_report() {
        let mut s = SocketDesc {
            proto: "tcp".into(),
            sock_type: "stream".into(),
            local: Some("127.0.0.1:9999".into()),
            peer: Some("127.0.0.1:40000".into()),
            tcp_state: Some("CLOSE_WAIT".into()),
        };
        assert_eq!(
            describe_socket(&s),
            "tcp 127.0.0.1:9999 -> 127.0.0.1:40000 CLOSE_WAIT"
        );
        s.peer = None;
        s.local = Some("0.0.0.0:9999".into());
        s.tcp_state = Some("LISTEN".into());
        assert_eq!(describe_socket(&s), "tcp 0.0.0.0:9999 LISTEN");
        s.local = Some("0.0.0.0:0".into());
        s.tcp_state = Some("CLOSE".into());
        assert_eq!(describe_socket(&s), "tcp unconnected (CLOSE)");
        assert_eq!(
            describe_socket(&SocketDesc::unlisted(Some("TCP"))),
            "tcp unconnected (CLOSE)"
        );
        assert_eq!(
            describe_socket(&SocketDesc::unlisted(Some("UDPv6"))),
            "udp6 unconnected"
        );
        assert_eq!(SocketDesc::unlisted(Some("AF_VSOCK")).proto, "af_vsock");
        assert!(!SocketDesc::unlisted(Some("TCP")).in_tables());
        assert!(!SocketDesc::unlisted(Some("UDP")).in_tables());
        let pair = SocketDesc {
            proto: "unix".into(),
            sock_type: "stream".into(),
            local: Some("(unnamed)".into()),
            peer: Some("(unnamed)".into()),
            ..Default::default()
        };
        assert_eq!(describe_socket(&pair), "unix stream (unnamed) -> (unnamed)");
        assert!(pair.in_tables());
    }

    #[test]
    fn what_the_tables_list() {
        let tcp = |local: &str, state| SocketDesc::tcp(local, None, state);
        assert!(tcp("0.0.0.0:8080", "LISTEN").in_tables());
        // Bound, or refused: the port shows, the tables have it not.
        assert!(!tcp("127.0.0.1:41000", "CLOSE").in_tables());
        assert!(!tcp("0.0.0.0:0", "CLOSE").in_tables());
        let udp = |local: &str| SocketDesc {
            proto: "udp6".into(),
            sock_type: "dgram".into(),
            local: Some(local.into()),
            ..SocketDesc::default()
        };
        assert!(udp("[::1]:53").in_tables());
        assert!(!udp("[::]:0").in_tables());
    }
}
