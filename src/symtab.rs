//! Function names from a module file's own symbol table, for libraries the debug-info reader
//! does not know.
//!
//! # Why
//! `backtrace` lists the loaded libraries once, when fdguard starts (`dumper::start`: a report
//! child could find the loader lock held by a thread that was not copied), and never again.
//! Under `fdguard run` that is before the program loads what it loads while it runs
//! (`libjvm.so` and `libjava.so` in a JVM, C extensions, node addons): their frames were named
//! only by what `.dynsym` exports, while after `fdguard attach`, made once they were loaded,
//! the same frames were named from `.symtab` (`handleOpen` in `libjava.so`). A report child
//! reads the table itself (no loader involved), so a frame is named the same whenever fdguard
//! started. Function names only: what debug info adds (file, line, inlined calls) still comes
//! from `backtrace`, for the libraries it knows.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;

use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSymbol, ReadCache, SymbolKind};

/// The functions of each module file asked about, read once (per report child).
#[derive(Default)]
pub struct SymbolTables {
    modules: RefCell<HashMap<String, Option<Functions>>>,
}

impl SymbolTables {
    /// The function holding `offset` (an address as the module's file states it: the pc less
    /// the load bias) in the module file at `path`, demangled.
    pub fn function(&self, path: &str, offset: u64) -> Option<String> {
        let mut modules = self.modules.borrow_mut();
        let functions = modules
            .entry(path.to_string())
            .or_insert_with(|| Functions::read(path))
            .as_ref()?;
        let raw = functions.at(offset)?;
        Some(format!("{:#}", backtrace::SymbolName::new(raw)))
    }
}

/// A module's functions sorted by start address: `[start, end)` and the raw name.
struct Functions(Vec<(u64, u64, Vec<u8>)>);

impl Functions {
    /// From `.symtab`, or `.dynsym` in a file without one; only the parts of the file those
    /// tables are in are read.
    fn read(path: &str) -> Option<Functions> {
        let cache = ReadCache::new(File::open(path).ok()?);
        let elf = ElfFile64::<Endianness, _>::parse(&cache).ok()?;
        let symbols = match elf.symbol_table() {
            Some(_) => elf.symbols(),
            None => elf.dynamic_symbols(),
        };
        let mut functions: Vec<_> = symbols
            .filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0)
            .filter_map(|s| {
                let end = s.address().checked_add(s.size().max(1))?;
                Some((s.address(), end, s.name_bytes().ok()?.to_vec()))
            })
            .collect();
        functions.sort_by_key(|(start, _, _)| *start);
        Some(Functions(functions))
    }

    fn at(&self, offset: u64) -> Option<&[u8]> {
        let after = self.0.partition_point(|(start, _, _)| *start <= offset);
        let (_, end, name) = self.0.get(after.checked_sub(1)?)?;
        (offset < *end).then_some(name.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function of this test binary's own `.symtab` that `.dynsym` does not have.
    #[inline(never)]
    fn local_function() -> usize {
        std::hint::black_box(local_function as *const () as usize)
    }

    #[test]
    fn names_local_functions_from_the_file() {
        let addr = local_function();
        let (bias, _) = crate::unwind::loaded_object(addr)
            .or_else(|| {
                crate::unwind::init();
                crate::unwind::loaded_object(addr)
            })
            .expect("this test binary is loaded");
        let exe = std::env::current_exe().unwrap();
        let tables = SymbolTables::default();
        let name = tables
            .function(exe.to_str().unwrap(), (addr - bias + 1) as u64)
            .expect("named");
        assert!(name.ends_with("local_function"), "{name}");
        assert_eq!(tables.function("/nonexistent", 0), None);
        assert_eq!(tables.function(exe.to_str().unwrap(), 0), None);
    }

    #[test]
    fn an_offset_between_functions_has_no_name() {
        let f = Functions(vec![
            (0x10, 0x20, b"a".to_vec()),
            (0x30, 0x31, b"b".to_vec()),
        ]);
        assert_eq!(f.at(0xf), None);
        assert_eq!(f.at(0x10), Some(&b"a"[..]));
        assert_eq!(f.at(0x1f), Some(&b"a"[..]));
        assert_eq!(f.at(0x20), None);
        assert_eq!(f.at(0x30), Some(&b"b"[..]));
        assert_eq!(f.at(0x31), None);
    }
}
