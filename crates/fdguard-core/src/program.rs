//! What kind of program an executable is, for what fdguard can see in it: nothing through
//! `LD_PRELOAD` in a statically linked one (no dynamic loader runs) or a set-ID one (the loader
//! ignores it), only what goes through libc in a Go one (the Go runtime makes its own system
//! calls), and interpreter or JIT frames instead of the program's own code in a JVM, CPython or
//! node (their reports need the runtime's help to name methods).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::elf::{self, ElfFacts};

/// Section names only the Go toolchain writes (`.note.go.buildid` is kept by `-ldflags=-s`).
const GO_SECTIONS: [&str; 3] = [".go.buildinfo", ".gopclntab", ".note.go.buildid"];

/// The runtime whose code a program runs, as far as fdguard's reports are concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Machine code called through libc: C, C++, Rust...
    #[default]
    Native,
    Go,
    /// A Java virtual machine (the `java` launcher, or any program that maps `libjvm.so`).
    Jvm,
    /// CPython.
    Python,
    /// node (V8).
    Node,
}

impl Runtime {
    /// Its name in reports: what the JSON has (`python`, `jvm`), in text too.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Native => "native",
            Runtime::Go => "go",
            Runtime::Jvm => "jvm",
            Runtime::Python => "python",
            Runtime::Node => "node",
        }
    }

    /// The runtime a mapped shared object brings into a process (a JVM embedded through JNI,
    /// CPython embedded in a server), from its path.
    pub fn of_library(path: &str) -> Option<Runtime> {
        let name = path.rsplit('/').next().unwrap_or(path);
        [
            ("libjvm.so", Runtime::Jvm),
            ("libpython3", Runtime::Python),
            ("libnode.so", Runtime::Node),
        ]
        .into_iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, r)| r)
    }

    /// What an ELF executable runs: Go from its sections; a JVM, CPython or node from the
    /// libraries it needs, or for those linked into the executable, a symbol only they export.
    fn of_executable(f: &ElfFacts, file: &File) -> Runtime {
        if GO_SECTIONS.iter().any(|s| f.has_section(s)) {
            return Runtime::Go;
        }
        if f.needs("libjli.so") || f.needs("libjvm.so") {
            return Runtime::Jvm;
        }
        if let Some(r) = f.needed.iter().find_map(|n| Runtime::of_library(n)) {
            return r;
        }
        if elf::defines_dynamic_symbol(file, "Py_Initialize") {
            return Runtime::Python;
        }
        if elf::defines_dynamic_symbol(file, "napi_module_register") {
            return Runtime::Node;
        }
        Runtime::Native
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    /// An ELF executable without a `PT_INTERP` header: no dynamic loader, no preload.
    pub is_static: bool,
    /// Set-user-ID or set-group-ID: the loader ignores `LD_PRELOAD` for it.
    pub is_setid: bool,
    pub runtime: Runtime,
}

impl Program {
    /// Reads the headers of the executable at `path`. Not an ELF file (a script, whose
    /// interpreter is what runs): `Ok` with nothing special about it.
    pub fn examine(path: &Path) -> std::io::Result<Program> {
        let file = File::open(path)?;
        let mode = file.metadata()?.permissions().mode();
        let (is_static, runtime) = match elf::facts(&file) {
            Some(f) => (!f.has_interp, Runtime::of_executable(&f, &file)),
            None => (false, Runtime::Native),
        };
        Ok(Program {
            is_static,
            is_setid: mode & 0o6000 != 0,
            runtime,
        })
    }

    pub fn is_go(&self) -> bool {
        self.runtime == Runtime::Go
    }
}

/// True if the executable at `path` calls `select()` itself: it imports `select` or `pselect`,
/// or glibc's `__fdelt_chk`, which a fortified `FD_SET` calls. `select()` cannot watch an fd
/// of `FD_SETSIZE` (1024) or more, so such a program breaks once its fds go that high.
/// Libraries it loads may call it too: false says nothing about them.
pub fn calls_select(path: &Path) -> bool {
    File::open(path)
        .is_ok_and(|f| elf::imports_dynamic_symbol(&f, &["select", "pselect", "__fdelt_chk"]))
}

/// True if the program at `path` was built by the Go toolchain. Reads only section headers:
/// the library asks this of every program it is loaded into.
pub fn is_go_program(path: &Path) -> bool {
    File::open(path)
        .ok()
        .and_then(|f| elf::facts(&f))
        .is_some_and(|f| GO_SECTIONS.iter().any(|s| f.has_section(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examine(path: &str) -> Program {
        Program::examine(Path::new(path)).unwrap()
    }

    #[test]
    fn a_rust_test_binary_is_dynamic_and_native() {
        let exe = std::env::current_exe().unwrap();
        let p = Program::examine(&exe).unwrap();
        assert_eq!(
            p,
            Program {
                is_static: false,
                is_setid: false,
                runtime: Runtime::Native,
            }
        );
        assert!(!is_go_program(&exe));
    }

    #[test]
    fn programs_that_call_select() {
        // bash waits for input with select; this test binary never calls it.
        assert!(calls_select(Path::new("/bin/bash")));
        assert!(!calls_select(&std::env::current_exe().unwrap()));
        assert!(!calls_select(Path::new("/nonexistent")));
    }

    #[test]
    fn a_file_that_is_not_elf_is_nothing_special() {
        let p = examine(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        assert!(!p.is_static && !p.is_go() && !p.is_setid);
        assert!(!is_go_program(Path::new("/nonexistent")));
    }

    #[test]
    fn runtimes_of_mapped_libraries() {
        let of = Runtime::of_library;
        assert_eq!(
            of("/usr/lib/jvm/java-17/lib/server/libjvm.so"),
            Some(Runtime::Jvm)
        );
        assert_eq!(of("/usr/lib/libpython3.11.so.1.0"), Some(Runtime::Python));
        assert_eq!(
            of("/usr/lib/x86_64-linux-gnu/libnode.so.108"),
            Some(Runtime::Node)
        );
        assert_eq!(of("/usr/lib/x86_64-linux-gnu/libc.so.6"), None);
        for r in [
            Runtime::Native,
            Runtime::Go,
            Runtime::Jvm,
            Runtime::Python,
            Runtime::Node,
        ] {
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.name())
            );
        }
    }
}
