//! What fdguard reads of an ELF file without loading it: program headers, section names,
//! needed libraries and dynamic symbols, through the `object` crate, reading only the parts
//! asked for (an executable can be hundreds of megabytes).

use std::fs::File;
use std::path::Path;

use object::read::elf::{Dyn, ElfFile, FileHeader, ProgramHeader};
use object::read::{ReadCache, ReadRef};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, elf};

/// The facts of one ELF file that program detection needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfFacts {
    /// A `PT_INTERP` header: the dynamic loader runs first (and honours `LD_PRELOAD`).
    pub has_interp: bool,
    pub sections: Vec<String>,
    /// `DT_NEEDED` entries: the libraries the loader maps with it.
    pub needed: Vec<String>,
}

impl ElfFacts {
    pub fn has_section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s == name)
    }

    pub fn needs(&self, prefix: &str) -> bool {
        self.needed.iter().any(|n| n.starts_with(prefix))
    }
}

fn facts_of<'d, H: FileHeader, R: ReadRef<'d>>(data: R) -> Option<ElfFacts> {
    let file = ElfFile::<H, R>::parse(data).ok()?;
    let endian = file.endian();
    let has_interp = file
        .elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(endian) == elf::PT_INTERP);
    let sections = file
        .sections()
        .filter_map(|s| s.name().ok().map(str::to_string))
        .collect();
    let mut needed = Vec::new();
    let section_table = file.elf_section_table();
    if let Ok(Some((dynamic, link))) = section_table.dynamic(endian, data) {
        let strings = section_table.strings(endian, data, link).ok()?;
        for d in dynamic {
            if d.d_tag(endian).into() == u64::from(elf::DT_NEEDED)
                && let Ok(offset) = u32::try_from(d.d_val(endian).into())
                && let Ok(name) = strings.get(offset)
            {
                needed.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Some(ElfFacts {
        has_interp,
        sections,
        needed,
    })
}

/// Reads the facts of the ELF file `file`; `None` if it is not one this version reads.
pub fn facts(file: &File) -> Option<ElfFacts> {
    let cache = ReadCache::new(file);
    match cache.read_bytes_at(0, 5).ok()? {
        [0x7f, b'E', b'L', b'F', 2] => facts_of::<elf::FileHeader64<object::Endianness>, _>(&cache),
        [0x7f, b'E', b'L', b'F', 1] => facts_of::<elf::FileHeader32<object::Endianness>, _>(&cache),
        _ => None,
    }
}

/// Whether the ELF file `file` defines the dynamic symbol `name` (exported to other objects).
pub fn defines_dynamic_symbol(file: &File, name: &str) -> bool {
    let cache = ReadCache::new(file);
    object::File::parse(&cache).is_ok_and(|f| {
        f.dynamic_symbols()
            .any(|s| s.is_definition() && s.name() == Ok(name))
    })
}

/// Whether the ELF file `file` imports any of the dynamic symbols `names` (undefined in it,
/// taken from a library it needs).
pub fn imports_dynamic_symbol(file: &File, names: &[&str]) -> bool {
    let cache = ReadCache::new(file);
    object::File::parse(&cache).is_ok_and(|f| {
        f.dynamic_symbols()
            .any(|s| s.is_undefined() && s.name().is_ok_and(|n| names.contains(&n)))
    })
}

/// The value of the dynamic symbol `name` of the ELF file at `path` (its address relative to
/// the load bias), and the virtual address of its first loadable segment (at file offset 0,
/// so page-aligned), which the bias is computed from.
pub fn dynamic_symbol(path: &Path, name: &str) -> Option<(u64, u64)> {
    let cache = ReadCache::new(File::open(path).ok()?);
    let file = object::File::parse(&cache).ok()?;
    let value = file
        .dynamic_symbols()
        .find(|s| s.is_definition() && s.name() == Ok(name))?
        .address();
    let first = file
        .segments()
        .find(|s| s.file_range().0 == 0)
        .map_or(0, |s| s.address());
    Some((value, first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_binary() {
        let exe = File::open(std::env::current_exe().unwrap()).unwrap();
        let f = facts(&exe).unwrap();
        assert!(f.has_interp);
        assert!(f.has_section(".text") && f.has_section(".eh_frame"));
        assert!(f.needs("libc.so"), "{:?}", f.needed);
    }

    #[test]
    fn rejects_what_is_not_elf() {
        let script = File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
        assert_eq!(facts(&script), None);
        assert!(!defines_dynamic_symbol(&script, "main"));
    }
}
