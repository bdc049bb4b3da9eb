//! Go under `fdguard run`'s tracer, as in the incidents behind fdguard: a Go program
//! (`tests/go/leak_three_ways.go`, static, built by the test) leaks files, dialed sockets and
//! unclosed HTTP response bodies; `fdguard report PID --json` names the `main.` function that
//! made each, the sockets `http.Get` dialed (from a goroutine net/http started) included, and
//! lists exactly the fds `/proc/PID/fd` lists; the exit report lists the leaks.
use crate::common::server::proc_children;
use crate::common::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Fds each leaking function makes.
const LEAKS: usize = 20;

/// Builds `tests/go/NAME.go` (standard library only, static) into `dir`.
fn build_go(name: &str, dir: &Path) -> PathBuf {
    let go = require("go");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/go/{name}.go"));
    let out = dir.join(name);
    let mut cmd = command(go);
    cmd.args(["build", "-o"])
        .arg(&out)
        .arg(&source)
        .current_dir(dir)
        .env("GOCACHE", dir.join("go-cache"))
        .env("GOPATH", dir.join("go-path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0");
    succeeds(cmd);
    out
}

/// A loopback listener whose connections are accepted and held until the test ends; with
/// `http`, each gets one small HTTP response to the request it sends.
fn holder(http: bool) -> (String, Arc<Mutex<Vec<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(LEAKS) {
            let Ok(mut stream) = stream else { return };
            if http {
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    request.push(byte[0]);
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n");
            }
            keep.lock().unwrap().push(stream);
        }
    });
    (addr, held)
}

/// The peer port of a socket row (`desc` is `tcp 127.0.0.1:A -> 127.0.0.1:B ...`).
fn peer_port(row: &Value) -> Option<u16> {
    let desc = row["desc"].as_str()?;
    let (_, peer) = desc.split_once("-> ")?;
    peer.split_whitespace().next()?.rsplit_once(':')?.1.parse().ok()
}

#[test]
fn go_leaks_name_the_main_function_that_made_them() {
    let dir = scratch("trace-go-leaks");
    let prog = build_go("leak_three_ways", &dir);
    let (backend, _backend_conns) = holder(false);
    let (web, _web_conns) = holder(true);
    let web_port: u16 = web.rsplit_once(':').unwrap().1.parse().unwrap();
    let report = dir.join("exit.json");
    let cmd = fdguard(&[
        "run",
        "--json",
        "--at-exit",
        "--report",
        report.to_str().unwrap(),
        "--",
        prog.to_str().unwrap(),
        &backend,
        &format!("http://{web}/"),
        &LEAKS.to_string(),
    ]);
    let mut s = Stepper::spawn(cmd, &report);
    let (_, lines) = s
        .next_checkpoint()
        .expect("the program reaches its checkpoint");
    // `fdguard run` traces the program as its child.
    let children = proc_children(s.pid());
    assert_eq!(children.len(), 1, "the tracer runs one program: {children:?}");
    let pid = children[0];
    let asked = succeeds(fdguard(&["report", &pid.to_string(), "--json"]));
    let kernel = proc_fds(pid);
    let r: Value = serde_json::from_str(&asked).unwrap_or_else(|e| panic!("{e}: {asked}"));
    assert_matches_kernel(&r, &kernel, &[]);

    let listed = |what: &str| -> Vec<i64> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("LEAK {what} ")))
            .map(|fd| fd.parse().unwrap())
            .collect()
    };
    let bodies: Vec<i64> = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| peer_port(row) == Some(web_port))
        .map(|row| row["fd"].as_i64().unwrap())
        .collect();
    for (what, fds, leaker) in [
        ("files", listed("file"), "main.leakFiles"),
        ("dialed sockets", listed("dial"), "main.dialBackend"),
        ("HTTP response bodies' sockets", bodies, "main.fetchStatus"),
    ] {
        assert_eq!(fds.len(), LEAKS, "{what}: {fds:?} in {r}");
        let named = fds
            .iter()
            .filter(|fd| {
                let row = fd_row(&r, **fd).unwrap_or_else(|| panic!("fd {fd} not in {r}"));
                functions(&stack_by_id(&r, &row["stack"]))
                    .iter()
                    .any(|f| f.starts_with(leaker))
            })
            .count();
        assert!(
            named * 10 >= fds.len() * 9,
            "{named} of {} {what} name {leaker}: {r}",
            fds.len()
        );
    }

    s.resume();
    let out = s.finish();
    assert!(out.status.success(), "{out:?}");
    let exit = report_lines(&report)
        .iter()
        .map(|l| parse_report(l))
        .find(|r| r["reason"] == "exit")
        .expect("an exit report");
    let leaked = report_fds(&exit);
    for fd in listed("file").iter().chain(&listed("dial")) {
        assert!(leaked.contains(fd), "fd {fd} leaked, not in the exit report: {exit}");
    }
}
