//! Compiles the eBPF recorder (`bpf/fdtrack.bpf.c`, see `src/ebpf`) with clang into OUT_DIR,
//! where `src/ebpf/load.rs` embeds it. Without clang the command is built without it (a
//! warning says so), and `fdguard attach` on a Go or static program says what is missing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(fdguard_bpf_object)");
    println!("cargo:rerun-if-changed=bpf/fdtrack.bpf.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("fdtrack.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // Built again once clang is installed or upgraded: a path that does not exist makes cargo
    // run this script at every build, until it does.
    if !clang.contains('/') {
        println!("cargo:rerun-if-changed=/usr/bin/{clang}");
    }
    // The x86-64 multiarch directory holds <asm/unistd.h>, which <linux/bpf.h> needs; the
    // BPF target has no directory of its own.
    let compiled = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .args([
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
            "bpf/fdtrack.bpf.c",
            "-o",
        ])
        .arg(&object)
        .status();
    match compiled {
        Ok(s) if s.success() => println!("cargo:rustc-cfg=fdguard_bpf_object"),
        Ok(s) => println!(
            "cargo:warning=clang failed on bpf/fdtrack.bpf.c ({s}): fdguard is built without \
             eBPF attach"
        ),
        Err(e) => println!(
            "cargo:warning=no {clang} ({e}): fdguard is built without eBPF attach (attach to Go \
             and static programs); install clang and build again"
        ),
    }
}
