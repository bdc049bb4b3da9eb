//! Names a process chooses (a file's, its own argv[0]) made to forge a line of fdguard's text
//! and to send escape sequences to the terminal of whoever looks at the process (often root):
//! every text output shows them escaped on their own line, the JSON exactly.
use crate::common::*;

use std::os::unix::process::CommandExt;

/// The program's argv[0]: a forged line of `inspect` and a window title.
const ARG0: &str = "./holder\n       0  file      /etc/shadow\n\x1b]0;pwn\x07";
const ARG0_SHOWN: &str = r"./holder\n       0  file      /etc/shadow\n\x1b]0;pwn\x07";

/// What no text output may contain: ESC and BEL, which start and end terminal sequences.
fn assert_no_terminal_codes(what: &str, text: &str) {
    assert!(
        !text.contains('\x1b') && !text.contains('\x07'),
        "{what} sends escape codes to the terminal:\n{text}"
    );
}

#[test]
fn a_hostile_file_name_is_escaped_in_text_and_exact_in_json() {
    let dir = scratch("hostile-name");
    let prog = build_c("hostile_name", &dir, &["-O1", "-g"]);
    let report = dir.join("report.txt");
    let mut cmd = guarded(&prog, &report);
    cmd.env("FDGUARD_FORMAT", "text").arg0(ARG0).arg(&dir);
    let mut s = Stepper::spawn(cmd, &report);
    let (_, lines) = s.next_checkpoint().expect("the program holds its file");
    let fd: i64 = value_after(&lines, "FD ");
    let pid = s.pid();
    let dir = dir.display();
    let name = format!("{dir}/evil\n=={pid}== fdguard: end of report\n\x1b[2J\x1b]0;pwn\x07.txt");
    let shown = format!(r"{dir}/evil\n=={pid}== fdguard: end of report\n\x1b[2J\x1b]0;pwn\x07.txt");

    // The library's text report: one report, ended by its own end line.
    kill(pid, libc::SIGUSR2);
    let end = format!("=={pid}== fdguard: end of report");
    wait_until("a text report", REPORT_WAIT, || {
        std::fs::read_to_string(&report).is_ok_and(|t| t.ends_with(&format!("{end}\n")))
    });
    let text = std::fs::read_to_string(&report).unwrap();
    assert_no_terminal_codes("the text report", &text);
    assert!(
        text.lines().all(|l| l.starts_with(&format!("=={pid}=="))),
        "{text}"
    );
    assert_eq!(text.lines().filter(|l| *l == end).count(), 1, "{text}");
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains(&format!("({ARG0_SHOWN})")),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.contains(&format!("  {fd}  file ")))
        .unwrap_or_else(|| panic!("no row for fd {fd}:\n{text}"));
    assert!(row.ends_with(&format!(" {shown}")), "{row}");

    // `fdguard report` prints what the library wrote.
    let asked = succeeds(fdguard(&["report", &pid.to_string()]));
    assert_no_terminal_codes("fdguard report", &asked);
    assert!(asked.contains(&shown), "{asked}");

    // `inspect`: the row, the first line and the command line, each on its own line.
    let text = succeeds(fdguard(&["inspect", &pid.to_string()]));
    assert_no_terminal_codes("inspect", &text);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{fd}  file ")))
        .unwrap_or_else(|| panic!("no row for fd {fd}:\n{text}"));
    assert!(row.ends_with(&shown), "{row}");
    assert!(
        !text.contains("\n==") && !text.contains("/etc/shadow\n"),
        "{text}"
    );
    let first = text.lines().next().unwrap();
    assert!(
        first.contains(&format!("in pid {pid} ({ARG0_SHOWN})")),
        "{first}"
    );
    assert!(
        text.contains(&format!("\ncommand: {ARG0_SHOWN} {dir}\n")),
        "{text}"
    );

    // `inspect --json` has the name exactly.
    let json: Value =
        serde_json::from_str(&succeeds(fdguard(&["inspect", "--json", &pid.to_string()]))).unwrap();
    assert_eq!(fd_row(&json, fd).unwrap()["desc"], name.as_str());
    assert_eq!(json["cmdline"][0], ARG0);

    // `watch` names the process once, escaped.
    let text = succeeds(fdguard(&["watch", &pid.to_string(), "--count", "1"]));
    assert_no_terminal_codes("watch", &text);
    assert!(
        text.starts_with(&format!("watching pid {pid} ({ARG0_SHOWN}) every 1s\n")),
        "{text}"
    );
    s.kill();
}
