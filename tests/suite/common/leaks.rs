//! What the tests of the Go leak program (`tests/go/leak_three_ways`) share: a loopback peer
//! its connections stay open to, the fds it says it leaked, and whether a report names the
//! function that made them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use super::server::{fd_soft_limit, set_fd_limit};
use super::{Value, fd_row, fdguard, functions, stack_by_id};

/// A loopback listener whose first `count` connections are accepted and held until the test
/// ends; with `http`, each gets one small HTTP response to the request it sends.
pub fn holder(http: bool, count: usize) -> (String, Arc<Mutex<Vec<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { return };
            if http {
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    request.push(byte[0]);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n",
                );
            }
            keep.lock().unwrap().push(stream);
        }
    });
    (addr, held)
}

/// The fds a program listed as `LEAK what FD` lines.
pub fn listed(lines: &[String], what: &str) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("LEAK {what} ")))
        .map(|fd| fd.parse().unwrap())
        .collect()
}

/// `fds` are `count`, and at least 9 in 10 of them have a stack naming `function`.
pub fn assert_named(r: &Value, what: &str, fds: &[i64], count: usize, function: &str) {
    assert_eq!(fds.len(), count, "{what}: {fds:?} in {r}");
    let named = fds
        .iter()
        .filter(|fd| {
            let row = fd_row(r, **fd).unwrap_or_else(|| panic!("fd {fd} not in {r}"));
            functions(&stack_by_id(r, &row["stack"]))
                .iter()
                .any(|f| f.starts_with(function))
        })
        .count();
    assert!(
        named * 10 >= fds.len() * 9,
        "{named} of {} {what} name {function}: {r}",
        fds.len()
    );
}

/// The files and dialed sockets `lines` list (`count` each) are named after the Go program's
/// `main.leakFiles` and `main.dialBackend` in report `r`.
pub fn assert_files_and_dials_named(r: &Value, lines: &[String], count: usize) {
    let files = listed(lines, "file");
    assert_named(r, "files", &files, count, "main.leakFiles");
    let dials = listed(lines, "dial");
    assert_named(r, "dialed sockets", &dials, count, "main.dialBackend");
}

/// The host view of a Go program under fdguard that leaked `files` files from `main.leakFiles`
/// (its soft limit lowered under what it holds for the moment, so that it ranks first and only
/// it is asked): `top` marks it as recorded `how`, and `metrics` gives its files' stack series,
/// named past Go's standard library, with that many fds.
///
/// Asked up to three times: a report is waited for 5 s per scrape, and on a loaded machine the
/// recorder may first be writing the threshold report the lowered limit set off.
pub fn assert_host_view_names_leaked_files(pid: u32, how: &str, files: usize) {
    let was = fd_soft_limit(pid);
    set_fd_limit(pid, 10, None);
    let id = format!("pid=\"{pid}\",");
    let stacks = format!("fdguard_process_stack_open_fds{{{id}");
    let mut said = Vec::new();
    let text = loop {
        let out = fdguard(&["metrics", "--top", "1"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        said.push(String::from_utf8_lossy(&out.stderr).into_owned());
        if text.contains(&stacks) || said.len() == 3 {
            break text;
        }
    };
    set_fd_limit(pid, was, None);
    let under = format!("fdguard_process_under_fdguard{{{id}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&under) && l.ends_with(&format!(",how=\"{how}\"}} 1"))),
        "{under}... how={how} not in {text}"
    );
    let named: usize = text
        .lines()
        .filter_map(|l| l.strip_prefix(&stacks))
        .filter(|l| l.contains("stack=\"main.leakFiles < "))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(named, files, "{text}\nstderr of each try: {said:?}");
}
