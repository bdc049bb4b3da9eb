//! Stacks of real processes: Go and static C programs built here (Go 1.19 from Debian's
//! golang-go, std library only; cc with -static), stopped in a blocking system call by
//! `PTRACE_SEIZE` and `PTRACE_INTERRUPT`, captured and named as the tracer will, and
//! checked against the sources' `LINE` markers and `go tool addr2line`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::*;
use crate::ptrace::{Stop, Tracee};

/// `openat` and `read` on x86-64: where the programs block; `socket`, where one is stopped.
const SYS_READ: i64 = 0;
const SYS_OPENAT: i64 = 257;
const SYS_SOCKET: u64 = 41;

/// The Go program's source, whose `LINE` markers the tests look for.
const GO_SRC: &str = "tests/go/blocked.go";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where the tests' directories are: one per test process and name ("PID-name"). Those of
/// test processes that are gone are removed first (a Go build cache is tens of MB).
fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join("fdguard-trace-stack-tests");
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        root
    })
}

/// A directory of this test process's own, for programs and FIFOs.
fn scratch(name: &str) -> PathBuf {
    let dir = scratch_root().join(format!("{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// tests/go/blocked.go built with `flags` into a directory of its own, with its own GOCACHE
/// and GOPATH (builds sharing one wait for each other).
fn go_build(name: &str, flags: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let dir = scratch(name);
    let out = dir.join("blocked");
    let go = &dir;
    let status = Command::new("go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(root().join(GO_SRC))
        .env("GOCACHE", go.join("cache"))
        .env("GOPATH", go.join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .envs(env.iter().copied())
        .current_dir(&dir)
        .status()
        .expect("running go (Debian's golang-go)");
    assert!(status.success(), "go build failed");
    out
}

/// tests/go/blocked.go, built once for the tests that run it as it is.
fn go_program() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| go_build("go", &[], &[]))
}

/// tests/c/stack_read.c, static, with `flags`.
fn c_program(name: &str, flags: &[&str]) -> PathBuf {
    let out = scratch(name).join("stack_read");
    let status = Command::new("cc")
        .args(["-static", "-g"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(root().join("tests/c/stack_read.c"))
        .status()
        .expect("running cc");
    assert!(status.success(), "cc failed");
    out
}

/// The line of `source` that holds `// LINE marker` (or `/* LINE marker */`).
fn line(source: &str, marker: &str) -> u32 {
    let text = std::fs::read_to_string(root().join(source)).unwrap();
    let tag = format!("LINE {marker}");
    let at = text
        .lines()
        .position(|l| {
            l.split_once(&tag).is_some_and(|(_, rest)| {
                !rest.starts_with(|c: char| c == '-' || c.is_alphanumeric())
            })
        })
        .unwrap_or_else(|| panic!("no {tag} in {source}"));
    at as u32 + 1
}

/// A started program, killed (by its pid) when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

fn fifo(dir: &Path) -> PathBuf {
    let path = dir.join("config");
    let status = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(status.success());
    path
}

/// The thread of `pid` blocked in system call `nr`, waited for up to 30 s.
fn blocked_thread(pid: u32, nr: i64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
        {
            let calls = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
            if calls.split(' ').next() == Some(&nr.to_string()) {
                return task.file_name().to_string_lossy().parse().unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{pid} never blocked in system call {nr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Thread `tid` stopped where it blocked, and its registers (the stop interrupts the call,
/// which the kernel restarts when the thread is let go).
fn stop(tid: i32) -> (Tracee, libc::user_regs_struct) {
    let mut t = Tracee::seize(tid).unwrap();
    let stopped = t.interrupt(Duration::from_secs(10)).unwrap();
    assert_eq!(stopped, Some(Stop::Interrupted));
    let regs = t.regs().unwrap();
    (t, regs)
}

/// The frames of `program` blocked in `nr`, as `Stacks` names them (depth 64).
fn blocked_frames(
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    nr: i64,
) -> (Captured, Vec<Frame>) {
    let running = start(program, args, env);
    let tid = blocked_thread(running.0.id(), nr);
    let (_tracee, regs) = stop(tid);
    let stacks = Stacks::for_program(program, 64);
    let captured = stacks.capture(tid, &regs);
    let frames = stacks.frames(&captured);
    print_cost(&stacks, tid, &regs, &captured);
    eprintln!("{}", names(&frames).join("\n"));
    (captured, frames)
}

fn names(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(Frame::display).collect()
}

/// The position of the first frame at or after `from` named `function` at `line`.
fn find(frames: &[Frame], from: usize, function: &str, line: Option<u32>) -> usize {
    frames
        .iter()
        .skip(from)
        .position(|f| f.function.as_deref() == Some(function) && (line.is_none() || f.line == line))
        .map(|i| i + from)
        .unwrap_or_else(|| {
            panic!(
                "no {function} at line {line:?} from frame {from}: {:#?}",
                names(frames)
            )
        })
}

/// `frames` hold `chain` (function and source line marker) in this order, each the frame
/// right after the one before.
fn assert_chain(frames: &[Frame], source: &str, chain: &[(&str, &str)]) {
    let mut at = find(frames, 0, chain[0].0, Some(line(source, chain[0].1)));
    for (function, marker) in &chain[1..] {
        let next = find(frames, at, function, Some(line(source, marker)));
        assert_eq!(
            next,
            at + 1,
            "{function} right after frame {at}: {:#?}",
            names(frames)
        );
        at = next;
    }
}

#[test]
fn a_go_stack_names_its_functions_inlined_ones_too() {
    let dir = scratch("go-main");
    let config = fifo(&dir);
    let program = go_program();
    let (captured, frames) = blocked_frames(
        program,
        &["main", config.to_str().unwrap()],
        &[],
        SYS_OPENAT,
    );
    assert!(!captured.cut);
    let src = GO_SRC;
    let read_file = find(&frames, 0, "os.ReadFile", None);
    assert_chain(
        &frames[read_file + 1..],
        src,
        &[
            ("main.openConfig", "openConfig"),
            ("main.readConfig", "readConfig"),
            ("main.main", "main"),
        ],
    );
    assert!(
        frames[read_file + 1]
            .file
            .as_deref()
            .unwrap()
            .ends_with(GO_SRC)
    );
    // The stubs' frames are left out (`without_syscall_stubs`): the stack starts at the call
    // the program made, which the walk reached through the frameless stub.
    assert_eq!(
        frames[0].function.as_deref(),
        Some("syscall.openat"),
        "{:#?}",
        names(&frames)
    );
    assert_as_go_reads_them(program, &frames);
}

/// What `go tool addr2line` says of each of `addrs` in `program`: the function, and
/// "file:line".
fn go_addr2line(program: &Path, addrs: &[u64]) -> Vec<[String; 2]> {
    use std::io::Write;
    let mut child = Command::new("go")
        .args(["tool", "addr2line"])
        .arg(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2 * addrs.len(), "{out}");
    lines
        .chunks(2)
        .map(|l| [l[0].clone(), l[1].clone()])
        .collect()
}

/// Each pc's frames say what Go's own `go tool addr2line` says of the call's offset in the
/// executable: the innermost file and line, the outermost function (it does not expand
/// inlined calls). Frames outside the executable, and creation sites, are left out.
fn assert_as_go_reads_them(program: &Path, frames: &[Frame]) {
    let own = |f: &&Frame| {
        f.module.as_deref() == Some(program.to_str().unwrap())
            && !f.function.as_deref().unwrap_or("").starts_with(CREATED_BY)
    };
    let mut pcs: Vec<&[Frame]> = Vec::new();
    for (i, f) in frames.iter().enumerate().filter(|(_, f)| own(f)) {
        match pcs.last_mut() {
            Some(last) if last[0].addr == f.addr => *last = &frames[i - last.len()..=i],
            _ => pcs.push(&frames[i..=i]),
        }
    }
    let offsets: Vec<u64> = pcs.iter().map(|p| p[0].offset.unwrap()).collect();
    for (pc, go) in pcs.iter().zip(go_addr2line(program, &offsets)) {
        let (inner, outer) = (&pc[0], &pc[pc.len() - 1]);
        let place = format!("{}:{}", inner.file.as_deref().unwrap(), inner.line.unwrap());
        assert_eq!(go[1], place, "{:#x}", inner.addr);
        assert_eq!(
            go[0],
            outer.function.as_deref().unwrap(),
            "{:#x}",
            inner.addr
        );
    }
}

/// `program` (tests/go/blocked.go as built) blocked in a goroutine: the creation site ends
/// its stack, and with ancestors kept, the stack that ran the `go` statement follows (these
/// frames are returned).
fn assert_goroutine_stack(program: &Path) -> Vec<Frame> {
    let dir = scratch("go-goroutine");
    let config = fifo(&dir);
    let args = ["goroutine", config.to_str().unwrap()];
    let src = GO_SRC;
    let (_, plain) = blocked_frames(program, &args, &[], SYS_OPENAT);
    assert_chain(
        &plain,
        src,
        &[
            ("main.openConfig", "openConfig"),
            ("main.readConfig", "readConfig"),
            ("main.worker", "worker"),
        ],
    );
    let created = find(
        &plain,
        0,
        "created by main.startWorker",
        Some(line(src, "startWorker")),
    );
    assert_eq!(created, plain.len() - 1, "{:#?}", names(&plain));
    let ancestors = [("GODEBUG", "tracebackancestors=5")];
    let (_, frames) = blocked_frames(program, &args, &ancestors, SYS_OPENAT);
    assert_chain(
        &frames,
        src,
        &[
            ("main.worker", "worker"),
            // Go 1.17 and later wrap a `go` statement's call with arguments in a closure.
            ("main.startWorker.func1", "startWorker"),
            ("created by main.startWorker", "startWorker"),
            ("main.main", "main-goroutine"),
        ],
    );
    frames
}

#[test]
fn a_goroutine_is_continued_by_its_creation_site() {
    let frames = assert_goroutine_stack(go_program());
    assert_as_go_reads_them(go_program(), &frames);
}

#[test]
fn a_stripped_go_program_too() {
    // No DWARF (-w), no symbols (-s, then strip): the line table is found by its section,
    // runtime.g's layout by the Go version, the inline trees through the module data.
    let program = go_build("go-stripped", &["-ldflags=-s -w"], &[]);
    let status = Command::new("strip")
        .arg(&program)
        .status()
        .expect("running strip");
    assert!(status.success());
    let image = Image::read(&program).unwrap();
    assert!(image.symbol("go.func.*").is_none() && image.section(".debug_info").is_none());
    let frames = assert_goroutine_stack(&program);
    let plain = assert_goroutine_stack(go_program());
    assert_eq!(places(&frames), places(&plain), "as without stripping");
}

#[test]
fn a_position_independent_go_program_too() {
    let program = go_build("go-pie", &["-buildmode=pie"], &[]);
    let frames = assert_goroutine_stack(&program);
    assert!(
        frames[0].addr - 1 > frames[0].offset.unwrap(),
        "loaded elsewhere than linked"
    );
    // (go tool addr2line cannot read a position-independent binary of Go 1.19: "?:0".)
    let plain = assert_goroutine_stack(go_program());
    assert_eq!(places(&frames), places(&plain), "as without -buildmode=pie");
}

#[test]
fn a_static_go_program_too_its_goroutine_found_by_the_tls_slot_as_well() {
    // Without cgo (the program above is linked with libc for net's resolver): static, and
    // the goroutine is in the TLS slot too.
    let program = go_build("go-static", &[], &[("CGO_ENABLED", "0")]);
    let frames = assert_goroutine_stack(&program);
    let plain = assert_goroutine_stack(go_program());
    assert_eq!(places(&frames), places(&plain), "as with cgo");
    let config = fifo(&scratch("go-static-tls"));
    let args = ["goroutine", config.to_str().unwrap()];
    let running = start(&program, &args, &[("GODEBUG", "tracebackancestors=5")]);
    let tid = blocked_thread(running.0.id(), SYS_OPENAT);
    let (_tracee, mut regs) = stop(tid);
    let stacks = Stacks::for_program(&program, 64);
    let by_r14 = stacks.capture(tid, &regs);
    assert!(!by_r14.created_by.is_empty());
    regs.r14 = 0;
    assert_eq!(stacks.capture(tid, &regs), by_r14);
}

/// What frames name, without where the code was.
fn places(frames: &[Frame]) -> Vec<(Option<&str>, Option<&str>, Option<u32>)> {
    frames
        .iter()
        .map(|f| (f.function.as_deref(), f.file.as_deref(), f.line))
        .collect()
}

#[test]
fn the_line_table_reads_as_go_reads_it_across_the_text() {
    // Every 997th byte of the program's code: functions, their files and lines (the
    // innermost, inlined calls' own) as `go tool addr2line` names them.
    let image = Image::read(go_program()).unwrap();
    let table = go_table(&image).unwrap();
    let (text, code) = image.section(".text").unwrap();
    let pcs: Vec<u64> = (text..text + code.len() as u64).step_by(997).collect();
    let mut compared = 0;
    for (pc, go) in pcs.iter().zip(go_addr2line(go_program(), &pcs)) {
        let ours = table.positions(*pc);
        if go[0] == "?" {
            assert!(ours.is_empty(), "{pc:#x}: {ours:?}");
            continue;
        }
        let (inner, outer) = (&ours[0], &ours[ours.len() - 1]);
        let (Some(file), Some(line)) = (&inner.file, inner.line) else {
            // C linked in through cgo: in the table without lines, where Go's reader reads
            // another function's table or none.
            assert_eq!(go[0], outer.function, "{pc:#x}");
            continue;
        };
        let place = format!("{file}:{line}");
        assert_eq!(go, [outer.function.clone(), place], "{pc:#x}");
        compared += 1;
    }
    assert!(compared > 1000, "{compared} of {} pcs", pcs.len());
}

#[test]
fn the_version_table_says_what_dwarf_says() {
    let image = Image::read(go_program()).unwrap();
    let version = image.go_version().unwrap();
    assert!(version.starts_with("go1."), "{version}");
    assert_eq!(
        Layout::for_version(&version),
        Layout::from_dwarf(&image),
        "{version}"
    );
}

#[test]
fn a_goroutine_net_http_started_leads_to_the_programs_request() {
    let dir = scratch("go-http");
    let config = fifo(&dir);
    // Never dialed: the dial blocks before it, reading the FIFO.
    let url = "http://127.0.0.1:9/";
    let args = ["http", config.to_str().unwrap(), url];
    let ancestors = [("GODEBUG", "tracebackancestors=5")];
    let (_, frames) = blocked_frames(go_program(), &args, &ancestors, SYS_OPENAT);
    let src = GO_SRC;
    let dial = find(
        &frames,
        0,
        "main.fetchStatus.func1",
        Some(line(src, "dial")),
    );
    led_from_net_http(
        &frames,
        dial,
        ("main.fetchStatus", "fetchStatus"),
        "main-http",
    );
}

/// From frame `from` on, `frames` have net/http's dial goroutine's creation site, then the
/// program's `caller` (function, line marker) and `main.main` at `main_marker` (with the
/// ancestors kept).
fn led_from_net_http(frames: &[Frame], from: usize, caller: (&str, &str), main_marker: &str) {
    let src = GO_SRC;
    let created = "created by net/http.(*Transport).queueForDial";
    let created = find(frames, from, created, None);
    let called = find(frames, created, caller.0, Some(line(src, caller.1)));
    find(frames, called, "main.main", Some(line(src, main_marker)));
}

/// The frames of tests/c/stack_read.c built with `flags`, blocked in its read.
fn c_frames(flags: &[&str]) -> (Captured, Vec<Frame>) {
    let program = c_program(&flags.join(""), flags);
    let dir = scratch(&format!("c{}", flags.join("")));
    let config = fifo(&dir);
    blocked_frames(&program, &[config.to_str().unwrap()], &[], SYS_READ)
}

fn assert_c_stack(flags: &[&str]) {
    let (captured, frames) = c_frames(flags);
    assert!(!captured.cut, "{:#?}", names(&frames));
    let src = "tests/c/stack_read.c";
    assert_chain(
        &frames,
        src,
        &[
            ("read_setting", "read_setting"),
            ("load_settings", "load_settings"),
            ("main", "main"),
        ],
    );
    assert!(
        frames[0].function.as_deref().unwrap().contains("read"),
        "{:#?}",
        names(&frames)
    );
}

#[test]
fn a_static_c_stack_without_frame_pointers_is_walked_by_its_unwind_information() {
    assert_c_stack(&["-O2"]);
}

#[test]
fn a_static_c_stack_with_frame_pointers() {
    assert_c_stack(&["-O2", "-fno-omit-frame-pointer"]);
}

#[test]
fn a_static_c_stack_without_either_says_so() {
    let (captured, frames) = c_frames(&[
        "-O2",
        "-fomit-frame-pointer",
        "-fno-asynchronous-unwind-tables",
        "-fno-unwind-tables",
    ]);
    assert!(captured.cut, "{:#?}", names(&frames));
    let src = "tests/c/stack_read.c";
    // libc's read has unwind information: its caller is found, and no further.
    find(&frames, 0, "read_setting", Some(line(src, "read_setting")));
    assert_eq!(frames.last().unwrap().function.as_deref(), Some(NOT_WALKED));
}

#[test]
fn a_deep_go_stack_is_captured_cheaply() {
    let dir = scratch("go-deep");
    let config = fifo(&dir);
    let program = go_program();
    let running = start(program, &["deep", config.to_str().unwrap()], &[]);
    let tid = blocked_thread(running.0.id(), SYS_OPENAT);
    let (_tracee, regs) = stop(tid);
    let stacks = Stacks::for_program(program, 64);
    let started = Instant::now();
    let first = stacks.capture(tid, &regs);
    let reading = started.elapsed();
    eprintln!("the first capture, reading the executable: {reading:?}");
    assert!(first.pcs.len() >= 30, "{first:?}");
    let frames = stacks.frames(&first);
    let nest = line(GO_SRC, "nest");
    let nested = frames
        .iter()
        .filter(|f| f.function.as_deref() == Some("main.nest"));
    assert_eq!(
        nested.filter(|f| f.line == Some(nest)).count(),
        24,
        "{:#?}",
        names(&frames)
    );
    print_cost(&stacks, tid, &regs, &first);
    // The depth bounds the frames (FDGUARD_DEPTH); 0 is no stack.
    let five = Stacks::for_program(program, 5).capture(tid, &regs);
    assert_eq!((&five.pcs[..], five.cut), (&first.pcs[..5], false));
    assert_eq!(
        Stacks::for_program(program, 0).capture(tid, &regs),
        Captured::default()
    );
}

/// Prints what a capture costs the tracer once the executable is read, and naming it at
/// report time (see it with `cargo test -- --nocapture`), checking that each is the same.
fn print_cost(stacks: &Stacks, tid: i32, regs: &libc::user_regs_struct, first: &Captured) {
    const CAPTURES: u32 = 2000;
    const NAMINGS: u32 = 50;
    let started = Instant::now();
    for _ in 0..CAPTURES {
        assert_eq!(&stacks.capture(tid, regs), first);
    }
    let capture = started.elapsed() / CAPTURES;
    let frames = stacks.frames(first);
    let started = Instant::now();
    for _ in 0..NAMINGS {
        assert_eq!(stacks.frames(first), frames);
    }
    let naming = started.elapsed() / NAMINGS;
    eprintln!(
        "{}: capture of {} pcs {:.1} us, naming {:.0} us",
        stacks.exe.display(),
        first.pcs.len() + first.created_by.iter().map(Vec::len).sum::<usize>(),
        capture.as_secs_f64() * 1e6,
        naming.as_secs_f64() * 1e6
    );
}

/// The stack at the entry of a `socket` call of Go program `pid` (running tests/go/blocked.go
/// `dials`), as `Stacks` captures and names it: each of its threads is traced from a thread
/// of the test's own (ptrace's tracer is a thread) from one system call to the next, up to
/// 60 s. Signals that stop the threads meanwhile (Go's preemption) are not delivered: the
/// runtime asks again.
fn socket_entry(program: &Path, pid: u32) -> (Captured, Vec<Frame>) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = AtomicBool::new(false);
    let stack = Mutex::new(None);
    let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| t.file_name().to_string_lossy().parse().unwrap())
        .collect();
    std::thread::scope(|s| {
        for tid in tids {
            let (found, stack) = (&found, &stack);
            s.spawn(move || {
                let Ok(mut t) = Tracee::seize(tid) else {
                    return; // gone already
                };
                if t.interrupt(Duration::from_secs(5)).is_err() {
                    return;
                }
                while !found.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match t.run_to_syscall(Duration::from_millis(50)) {
                        Ok(Some(Stop::SyscallEntry)) => {}
                        Ok(Some(Stop::Gone)) | Err(_) => return,
                        _ => continue,
                    }
                    let regs = t.regs().unwrap();
                    // Entry, not exit: the kernel has put -ENOSYS in rax.
                    if regs.orig_rax == SYS_SOCKET && regs.rax as i64 == -(libc::ENOSYS as i64) {
                        let stacks = Stacks::for_program(program, 64);
                        let captured = stacks.capture(tid, &regs);
                        let frames = stacks.frames(&captured);
                        *stack.lock().unwrap() = Some((captured, frames));
                        found.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let stack = stack.into_inner().unwrap();
    stack.expect("no socket call within 60 s")
}

#[test]
fn a_socket_net_http_dials_is_the_programs_at_its_system_call_entry() {
    // A port nothing listens on: every GET fails at once, and the loop dials again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let ancestors = [("GODEBUG", "tracebackancestors=5")];
    let running = start(go_program(), &["dials", &url], &ancestors);
    std::thread::sleep(Duration::from_millis(200)); // its threads started
    let (captured, frames) = socket_entry(go_program(), running.0.id());
    eprintln!("{}", names(&frames).join("\n"));
    assert!(!captured.cut);
    let socket = find(&frames, 0, "syscall.socket", None);
    led_from_net_http(
        &frames,
        socket,
        ("main.fetchLoop", "fetchLoop"),
        "main-dials",
    );
}

#[test]
fn go_syscall_stubs_lead_no_stack_but_never_leave_it_empty() {
    let frame = |name: &str| Frame {
        function: Some(name.to_string()),
        ..Frame::default()
    };
    let mut frames = vec![
        frame("runtime/internal/syscall.Syscall6"),
        frame("syscall.RawSyscall6"),
        frame("syscall.Syscall6"),
        frame("syscall.openat"),
        frame("main.main"),
    ];
    without_syscall_stubs(&mut frames);
    assert_eq!(names(&frames), ["syscall.openat", "main.main"]);
    let mut only = vec![frame("syscall.Syscall6")];
    without_syscall_stubs(&mut only);
    assert_eq!(only.len(), 1);
}
