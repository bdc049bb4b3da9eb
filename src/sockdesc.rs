//! How reports describe a socket. Pure, and shared: the `fdguard` command compiles this file
//! into itself (`cli/src/main.rs`), so that `inspect` describes a socket it finds in
//! `/proc/PID/net` in the very words a report uses for one it asked with `getsockname`.

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketDesc {
    /// "tcp", "tcp6", "udp", "udp6", "unix", "netlink", ...
    pub proto: String,
    /// "stream", "dgram", "seqpacket", "raw" (shown for unix sockets).
    pub sock_type: &'static str,
    pub local: Option<String>,
    pub peer: Option<String>,
    /// TCP state name (ESTABLISHED, CLOSE_WAIT, LISTEN, ...).
    pub tcp_state: Option<&'static str>,
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
        d.push_str(s.sock_type);
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
    match s.tcp_state {
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
}
