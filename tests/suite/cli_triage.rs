//! `fdguard inspect`'s triage: a listener whose accept queue is full (the program stopped
//! accepting, seed 001's `Recv-Q 129` of 128), and the CPU use of a process at its limit, with
//! `fdguard attach` named when it spins in accept (seed 003).
use crate::common::pace::{TRIES, until};
use crate::common::server::*;
use crate::common::*;

use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::Duration;

/// More clients than `tests/c/full_backlog.c`'s backlog of 2: the kernel completes the
/// handshakes of three (one more than the backlog), the others wait for room that never comes.
#[test]
fn a_listener_that_does_not_accept_shows_its_queue_full() {
    let dir = scratch("triage-backlog");
    let prog = build_c("full_backlog", &dir, &["-O1"]);
    let mut server = Proc::spawn(
        command(&prog)
            .arg("2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let port: u16 = server.first_line().trim()[5..].parse().unwrap();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    // Bounded: a client past the queue times out (its handshake is dropped), and is kept.
    let _clients: Vec<std::io::Result<TcpStream>> = (0..6)
        .map(|_| TcpStream::connect_timeout(&to, Duration::from_millis(300)))
        .collect();
    let pid = server.id().to_string();
    let out = succeeds(fdguard(&["inspect", "--json", &pid]));
    let j: Value = serde_json::from_str(&out).unwrap();
    let listener = j["fds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["socket"]["tcp_state"] == "LISTEN")
        .unwrap_or_else(|| panic!("no listener in {j}"));
    let (queue, backlog) = (
        listener["socket"]["accept_queue"].as_u64().unwrap(),
        listener["socket"]["backlog"].as_u64().unwrap(),
    );
    assert_eq!(backlog, 2, "{listener}");
    assert!(queue >= backlog, "full: {listener}");
    let fd = listener["fd"].as_i64().unwrap();

    let text = succeeds(fdguard(&["inspect", &pid]));
    let line = format!(
        "listener fd {fd} (tcp 127.0.0.1:{port} LISTEN): accept queue {queue} of 2: full, \
         the program is not accepting"
    );
    assert!(text.lines().any(|l| l == line), "{line}\n{text}");
}

/// `examples/c/accept_spin.c` squeezed to its limit with clients waiting: its accept fails
/// with EMFILE and the loop retries at once. `inspect` samples its CPU and names `fdguard
/// attach`; with the clients gone and fds free again, it is calm and nothing is named.
#[test]
fn a_server_spinning_at_its_limit_is_pointed_to_attach() {
    let _one = one_at_a_time();
    let dir = scratch("triage-spin");
    let prog = build_example("accept_spin", "accept_spin", &dir, &["-O2", "-g"]);
    let mut s = Server::start(&prog, &[], &dir, None);
    s.squeeze();
    let from = s.log_len();
    let holders: Vec<TcpStream> = (0..HOLDERS).map(|_| connect(s.port)).collect();
    s.wait_for("accept:", from, Duration::from_secs(20));
    let pid = s.pid().to_string();
    let hint = format!("`fdguard attach {pid}` stops the spin");
    // Under other work the spinning loop may get less than the threshold for one sample.
    let text = until(
        "inspect names attach for the spinning server",
        || succeeds(fdguard(&["inspect", &pid])),
        |t| t.contains(&hint),
    );
    let cpu = text.lines().find(|l| l.starts_with("cpu: ")).unwrap();
    assert!(
        cpu.contains("at its limit: a loop retrying accept"),
        "{text}"
    );
    let j: Value = serde_json::from_str(&succeeds(fdguard(&["inspect", "--json", &pid]))).unwrap();
    assert!(
        j["cpu"]["window_ms"].as_u64().unwrap() >= 150,
        "{}",
        j["cpu"]
    );

    // The clients leave: the server accepts, serves and closes them, and waits in accept.
    drop(holders);
    let mut calm = String::new();
    for _ in 0..TRIES * 4 {
        std::thread::sleep(Duration::from_millis(250));
        calm = succeeds(fdguard(&["inspect", &pid]));
        if !calm.contains("stops the spin") {
            break;
        }
    }
    assert!(!calm.contains("stops the spin"), "{calm}");
}
