//! The options text `fdguard_attach` receives: fdguard's variables, then what the library
//! cannot find out itself.

use crate::run::GuardOptions;
use fdguard_core::kind::FdKind;
use fdguard_core::snapshot::FdEntry;

/// The options for an attach with `options` to a process with `fds` open (see the library's
/// `attach::parse_options`).
pub fn text(options: &GuardOptions, fds: &[FdEntry]) -> String {
    let mut lines: Vec<String> = options
        .variables()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    lines.extend(epoll_lines(fds));
    lines.push(format!("fds-below {}", fds.last().map_or(0, |e| e.fd + 1)));
    lines.join("\n")
}

/// The lines telling the library about epoll sets watching listening sockets (it cannot read
/// `/proc/self/fdinfo` itself without taking an fd, and the process may have none left).
fn epoll_lines(fds: &[FdEntry]) -> Vec<String> {
    let listeners: Vec<i32> = fds
        .iter()
        .filter(|e| e.tcp_state().map(|s| &**s) == Some("LISTEN"))
        .map(|e| e.fd)
        .collect();
    let mut lines = Vec::new();
    for e in fds.iter().filter(|e| e.kind == FdKind::Epoll) {
        for w in e.watches.iter().filter(|w| listeners.contains(&w.fd)) {
            let data = w.data.trim_start_matches("0x");
            lines.push(format!("epoll {} {} {:x} {data}", e.fd, w.fd, w.mask));
        }
    }
    lines.truncate(256);
    lines
}
