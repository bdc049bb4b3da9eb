//! What kind of program an executable is, for what an `LD_PRELOAD` shim can see in it: nothing
//! in a statically linked one (no dynamic loader runs), and in a Go one nothing but what goes
//! through libc (the Go runtime makes its own system calls).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::read::{ReadCache, ReadRef};

/// Section names only the Go toolchain writes (kept by `go build -ldflags=-s`).
const GO_SECTIONS: [&[u8]; 3] = [b".go.buildinfo", b".gopclntab", b".note.go.buildid"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    /// An ELF executable without a `PT_INTERP` header: no dynamic loader, no preload.
    pub is_static: bool,
    pub is_go: bool,
    /// Set-user-ID or set-group-ID: the loader ignores `LD_PRELOAD` for it.
    pub is_setid: bool,
}

fn examine_elf<'d, H: FileHeader, R: ReadRef<'d>>(data: R) -> Option<(bool, bool)> {
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let has_interp = header
        .program_headers(endian, data)
        .ok()?
        .iter()
        .any(|ph| ph.p_type(endian) == elf::PT_INTERP);
    let is_go = header.sections(endian, data).is_ok_and(|sections| {
        GO_SECTIONS
            .iter()
            .any(|name| sections.section_by_name(endian, name).is_some())
    });
    Some((!has_interp, is_go))
}

impl Program {
    /// Reads the headers of the executable at `path`. Not an ELF file (a script, whose
    /// interpreter is what runs): `Ok` with nothing special about it.
    pub fn examine(path: &Path) -> std::io::Result<Program> {
        let file = File::open(path)?;
        let mode = file.metadata()?.permissions().mode();
        let cache = ReadCache::new(file);
        let ident = cache.read_bytes_at(0, 5).unwrap_or_default();
        let elf = match ident {
            [0x7f, b'E', b'L', b'F', 2] => {
                examine_elf::<elf::FileHeader64<object::Endianness>, _>(&cache)
            }
            [0x7f, b'E', b'L', b'F', 1] => {
                examine_elf::<elf::FileHeader32<object::Endianness>, _>(&cache)
            }
            _ => None,
        };
        let (is_static, is_go) = elf.unwrap_or((false, false));
        Ok(Program {
            is_static,
            is_go,
            is_setid: mode & 0o6000 != 0,
        })
    }
}

/// The value of the dynamic symbol `name` of the ELF file at `path` (its address relative to
/// the load bias), and the virtual address of its first loadable segment (at file offset 0),
/// which the bias is computed from.
pub fn dynamic_symbol(path: &Path, name: &str) -> Option<(u64, u64)> {
    use object::{Object, ObjectSegment, ObjectSymbol};
    let cache = ReadCache::new(File::open(path).ok()?);
    let file = object::File::parse(&cache).ok()?;
    let value = file
        .dynamic_symbols()
        .find(|s| s.is_definition() && s.name() == Ok(name))?
        .address();
    let first = file
        .segments()
        .find(|s| s.file_range().0 == 0)
        .map_or(0, |s| s.address() & !0xfff);
    Some((value, first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_test_binary_is_dynamic_and_not_go() {
        let p = Program::examine(&std::env::current_exe().unwrap()).unwrap();
        assert_eq!(
            p,
            Program {
                is_static: false,
                is_go: false,
                is_setid: false
            }
        );
    }

    #[test]
    fn a_script_is_nothing_special() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test.sh");
        let p = Program::examine(Path::new(script)).unwrap();
        assert!(!p.is_static && !p.is_go && !p.is_setid);
    }
}
