//! `fdguard attach` and objects the program loads afterwards: `dl_loader.c`, started without
//! fdguard, loads copies of `dl_plugin.c` one step at a time (`dlopen` by path, by a bare name
//! found only through its `DT_RUNPATH`, with `$ORIGIN`, `dlmopen`) and at once calls a function
//! of each that opens fds. Attached, every object is patched before `dlopen` returns (the fds
//! have their creating call and the plugin's function in their stack), and every call gives
//! what it gives the same program never attached. Detached, `dlopen` is libc's again.
use crate::common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the program said about one step (the `KEY value` lines before its "loaded"
/// checkpoint).
type Step = BTreeMap<String, String>;

/// The loader, built in `dir` with `$ORIGIN/plugins` as its RUNPATH and its symbols exported
/// (the plugins' constructors call `app_helper_open`), and the plugin copies `names`: in
/// `dir/plugins`, and `dir/other/libdlplug_a.so`, found only by its path.
fn build(dir: &Path, names: &[&str]) -> PathBuf {
    let prog = build_c_linked(
        "dl_loader",
        dir,
        &["-O1", "-g", "-rdynamic"],
        &["-Wl,--enable-new-dtags,-rpath,$ORIGIN/plugins", "-ldl"],
    );
    for sub in ["plugins", "other"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let plugin = build_c_shared("dl_plugin", "plugins/libdlplug.so", dir, &["-O1", "-g"]);
    for name in names {
        std::fs::copy(&plugin, dir.join("plugins").join(name)).unwrap();
    }
    std::fs::copy(&plugin, dir.join("other/libdlplug_a.so")).unwrap();
    prog
}

/// The loader started without fdguard on `steps`, at its first "next" checkpoint.
fn start(prog: &Path, steps: &[String]) -> Stepper {
    let mut cmd = plain(prog);
    cmd.args(steps);
    let mut s = Stepper::spawn(cmd, &prog.with_file_name("unused"));
    assert_eq!(s.next_checkpoint().unwrap().0, "next");
    s
}

/// Lets the program past "loaded" to its next step.
fn next(s: &mut Stepper) {
    s.resume();
    assert_eq!(s.next_checkpoint().unwrap().0, "next");
}

/// Lets the program take its step; returns what it said.
fn step(s: &mut Stepper) -> Step {
    s.resume();
    let (name, lines) = s.next_checkpoint().unwrap();
    assert_eq!(name, "loaded", "{lines:?}");
    lines
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The fds a step's `FDS` line names.
fn fds_of(step: &Step) -> Vec<i64> {
    step["FDS"].split(' ').map(|n| n.parse().unwrap()).collect()
}

fn fd_of(step: &Step, key: &str) -> i64 {
    step[key].parse().unwrap()
}

fn attach(pid: u32, dir: &Path) {
    let report = dir.join("r.json");
    let said = succeeds(fdguard(&[
        "attach",
        &pid.to_string(),
        "--json",
        "--report",
        report.to_str().unwrap(),
    ]));
    assert!(said.contains("attached to pid"), "{said}");
}

fn report(pid: u32) -> Value {
    serde_json::from_str(&succeeds(fdguard(&["report", &pid.to_string(), "--json"]))).unwrap()
}

/// The names of the functions of the stack of `fd`'s row, innermost first.
fn stack_of(r: &Value, fd: i64) -> Vec<String> {
    let row = fd_row(r, fd).unwrap_or_else(|| panic!("no row for fd {fd}: {r}"));
    assert_ne!(row["stack"], Value::Null, "fd {fd} has a stack: {row}");
    functions(&stack_by_id(r, &row["stack"]))
}

/// The fds `plugin_open_files` opened at `step` have their call and the plugin's function in
/// their stack, the one `app_helper_open` opened from the plugin's constructor too; the
/// constructor's own fd is untracked (the object was not patched yet when it ran), and no other
/// fd of the kernel's is but those in `untracked` (the earlier steps').
fn assert_tracked(r: &Value, pid: u32, step: &Step, untracked: &[i64]) {
    let fds = fds_of(step);
    for (fd, call) in fds.iter().zip(["open", "pipe", "pipe"]) {
        assert_eq!(fd_row(r, *fd).unwrap()["call"], call, "fd {fd}");
        let stack = stack_of(r, *fd);
        assert_eq!(stack[0], "plugin_open_files", "fd {fd}: {stack:?}");
        assert!(stack.contains(&"main".to_string()), "fd {fd}: {stack:?}");
    }
    let helper = fd_of(step, "HELPER_FD");
    assert_eq!(stack_of(r, helper)[0], "app_helper_open", "{step:?}");
    let ctor = fd_of(step, "CTOR_FD");
    assert_eq!(fd_row(r, ctor).unwrap()["call"], "untracked", "{step:?}");
    assert_matches_kernel(r, &proc_fds(pid), &[untracked, &[ctor]].concat());
}

/// (a) Loaded by path right after the attach, a plugin's first fds are tracked, with the
/// plugin's function in their stack; its GOT and the program's `dlopen` point to fdguard.
#[test]
fn a_plugin_loaded_after_attach_is_tracked_from_its_first_call() {
    let dir = scratch("dlopen-tracked");
    let prog = build(&dir, &[]);
    let path = dir.join("other/libdlplug_a.so");
    let mut s = start(&prog, &[path.to_string_lossy().into_owned()]);
    attach(s.pid(), &dir);
    let loaded = step(&mut s);
    assert_eq!(loaded["LOADED"], path.to_string_lossy(), "{loaded:?}");
    assert_eq!(loaded["OPEN_BOUND"], "libfdguard.so", "{loaded:?}");
    assert_eq!(loaded["DLOPEN_BOUND"], "libfdguard.so", "{loaded:?}");
    let r = report(s.pid());
    assert_tracked(&r, s.pid(), &loaded, &[]);
    s.resume();
    assert!(s.finish().status.success());
}

/// (b, c) `dlopen` as the program's own call: a bare name found only through the program's
/// RUNPATH, `$ORIGIN` in the name, a name found nowhere (the same error), an object closed and
/// loaded again (patched again), `dlmopen` into the program's namespace (patched) and into a
/// new one (not patched, as a preloaded library does not reach it either), and a call from
/// code in no object (a JIT's: the stub jumps to libc's `dlopen` as it was called, and the
/// next hooked call patches what it loaded). Each step gives what it gives the same program
/// never attached.
#[test]
fn dlopen_finds_what_the_program_would_and_patches_it() {
    let dir = scratch("dlopen-as-caller");
    let names = ["b", "c", "d", "e", "f"].map(|n| format!("libdlplug_{n}.so"));
    let prog = build(&dir, &names.each_ref().map(String::as_str));
    let at = |name: &str| {
        dir.join("plugins")
            .join(name)
            .to_string_lossy()
            .into_owned()
    };
    let steps: Vec<String> = vec![
        "libdlplug_b.so".into(),
        "$ORIGIN/plugins/libdlplug_c.so".into(),
        "close".into(),
        "$ORIGIN/plugins/libdlplug_c.so".into(),
        "libdlplug_missing.so".into(),
        format!("base:{}", at("libdlplug_e.so")),
        format!("jit:{}", at("libdlplug_f.so")),
        format!("new:{}", at("libdlplug_d.so")),
    ];
    let mut control = start(&prog, &steps);
    let mut s = start(&prog, &steps);
    attach(s.pid(), &dir);
    // What the earlier steps left untracked.
    let mut untracked = Vec::new();
    for (i, name) in steps.iter().enumerate() {
        if i > 0 {
            next(&mut control);
            next(&mut s);
        }
        let (plain, attached) = (step(&mut control), step(&mut s));
        for key in ["LOADED", "DLERROR", "CLOSED", "HELPER_FD"] {
            assert_eq!(plain.get(key), attached.get(key), "{name}: {key}");
        }
        assert_eq!(plain["DLOPEN_BOUND"], "libc.so.6", "{name}");
        assert_eq!(attached["DLOPEN_BOUND"], "libfdguard.so", "{name}");
        if i > 0 && steps[i - 1].starts_with("jit:") {
            // Patched by this step's call, before it returned.
            assert_eq!(attached["PREVIOUS_OPEN_BOUND"], "libfdguard.so", "{name}");
        }
        if !attached.contains_key("LOADED") {
            continue;
        }
        let r = report(s.pid());
        if name.starts_with("new:") || name.starts_with("jit:") {
            assert_eq!(attached["OPEN_BOUND"], "libc.so.6", "{name}");
            for fd in fds_of(&attached) {
                assert_eq!(fd_row(&r, fd).unwrap()["call"], "untracked", "{name}: {fd}");
                untracked.push(fd);
            }
        } else {
            assert_eq!(attached["OPEN_BOUND"], "libfdguard.so", "{name}");
            assert_tracked(&r, s.pid(), &attached, &untracked);
        }
        untracked.push(fd_of(&attached, "CTOR_FD"));
    }
    for mut p in [control, s] {
        p.resume();
        assert!(p.finish().status.success());
    }
}

/// (d) Detached, the program's `dlopen` is libc's again, and what it loads is not patched: its
/// fds are open (the kernel says so) and its `open` is libc's.
#[test]
fn after_detach_dlopen_is_libcs_and_loads_objects_as_they_are() {
    let dir = scratch("dlopen-detached");
    let prog = build(&dir, &["libdlplug_b.so"]);
    let path = dir.join("other/libdlplug_a.so");
    let mut s = start(
        &prog,
        &[path.to_string_lossy().into_owned(), "libdlplug_b.so".into()],
    );
    attach(s.pid(), &dir);
    assert_eq!(step(&mut s)["OPEN_BOUND"], "libfdguard.so");
    next(&mut s);
    let said = succeeds(fdguard(&["detach", &s.pid().to_string()]));
    assert!(said.contains("call sites restored"), "{said}");
    let loaded = step(&mut s);
    assert_eq!(
        loaded["LOADED"],
        dir.join("plugins/libdlplug_b.so").to_string_lossy()
    );
    assert_eq!(loaded["DLOPEN_BOUND"], "libc.so.6", "{loaded:?}");
    assert_eq!(loaded["OPEN_BOUND"], "libc.so.6", "{loaded:?}");
    let kernel = proc_fds(s.pid());
    for fd in fds_of(&loaded) {
        assert!(kernel.contains(&fd), "fd {fd} open: {kernel:?}");
    }
    s.resume();
    assert!(s.finish().status.success());
}

/// The `dlopen` hooks' detour (a return through the caller's own code) would be refused by a
/// shadow stack: none is on in a process into which glibc loaded `libfdguard.so`, as long as
/// the library is not marked for shadow stacks (glibc refuses to `dlopen` an unmarked library
/// into a process that has one, or turns it off).
#[test]
fn libfdguard_is_not_marked_for_shadow_stacks() {
    let mut readelf = command(require("readelf"));
    readelf.arg("-n").arg(lib_path());
    let notes = succeeds(readelf);
    assert!(!notes.contains("SHSTK"), "{notes}");
}

/// Three threads loading, using and unloading plugins while fdguard is attached and detached
/// four times, a report taken each time: every call gives its result, and the program ends.
#[test]
fn threads_loading_plugins_while_attached_and_detached() {
    let dir = scratch("dlopen-churn");
    let prog = build_c_linked("dl_churn", &dir, &["-O1", "-g", "-rdynamic"], &["-ldl"]);
    let plugin = build_c_shared("dl_plugin", "plugin.so", &dir, &["-O1", "-g"]);
    for (t, i) in (0..3).flat_map(|t| [(t, 0), (t, 1)]) {
        std::fs::copy(&plugin, dir.join(format!("libchurn{t}_{i}.so"))).unwrap();
    }
    let mut cmd = plain(&prog);
    cmd.arg(&dir);
    let mut s = Stepper::spawn(cmd, &dir.join("unused"));
    assert_eq!(s.next_checkpoint().unwrap().0, "churning");
    for _ in 0..4 {
        attach(s.pid(), &dir);
        report(s.pid());
        let said = succeeds(fdguard(&["detach", &s.pid().to_string()]));
        assert!(said.contains("call sites restored"), "{said}");
    }
    let out = s.finish();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "every call gave its result: {text}");
    assert!(text.starts_with("ok "), "{text}");
}
