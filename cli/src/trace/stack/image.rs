//! The executable file as the stack modules read it: its sections by name (Go's compressed
//! DWARF inflated), its symbols, where it expects to be loaded, and the Go version its build
//! info names. Read once per executable, at the first stack that needs it.

use std::borrow::Cow;
use std::path::Path;

use object::read::elf::{ElfFile64, FileHeader};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

/// An executable's bytes, parsed again for each question (parsing reads only headers).
pub struct Image {
    data: Vec<u8>,
}

impl Image {
    pub fn read(path: &Path) -> Option<Image> {
        let data = std::fs::read(path).ok()?;
        ElfFile64::<object::Endianness>::parse(&*data).ok()?;
        Some(Image { data })
    }

    fn elf(&self) -> ElfFile64<'_, object::Endianness> {
        ElfFile64::parse(&*self.data).expect("parsed when read")
    }

    /// A section's contents, inflated when the linker compressed it (Go's `.zdebug_*`
    /// sections, or `SHF_COMPRESSED` ones), and its address.
    pub fn section(&self, name: &str) -> Option<(u64, Cow<'_, [u8]>)> {
        let elf = self.elf();
        let zname = name.strip_prefix(".debug_").map(|n| format!(".zdebug_{n}"));
        let section = elf
            .section_by_name(name)
            .or_else(|| zname.and_then(|z| elf.section_by_name(&z)))?;
        let compressed = section.compressed_data().ok()?;
        let data = match compressed.format {
            object::CompressionFormat::None => Cow::Borrowed(compressed.data),
            object::CompressionFormat::Zlib => Cow::Owned(
                miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(
                    compressed.data,
                    usize::try_from(compressed.uncompressed_size).ok()?,
                )
                .ok()?,
            ),
            _ => return None,
        };
        Some((section.address(), data))
    }

    /// The address of the symbol `name` in `.symtab` (absent from a stripped file).
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.elf()
            .symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
    }

    /// Function symbols (address, size, name), sorted by address.
    pub fn functions(&self) -> Vec<(u64, u64, String)> {
        let mut out: Vec<_> = self
            .elf()
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
            .collect();
        out.sort();
        out
    }

    /// The section holding `addr`: its address and contents.
    pub fn section_at(&self, addr: u64) -> Option<(u64, Vec<u8>)> {
        let elf = self.elf();
        let s = elf
            .sections()
            .find(|s| (s.address()..s.address() + s.size()).contains(&addr))?;
        Some((s.address(), s.data().ok()?.to_vec()))
    }

    /// The bytes of every loaded section with data, with its address, for a search.
    pub fn loaded_sections(&self) -> Vec<(u64, &[u8])> {
        self.elf()
            .sections()
            .filter(|s| s.address() != 0)
            .filter_map(|s| Some((s.address(), s.data().ok()?)))
            .collect()
    }

    /// The entry point as linked: with the one the kernel reports (`AT_ENTRY`) it gives a
    /// position-independent executable's load bias.
    pub fn entry(&self) -> u64 {
        self.elf().entry()
    }

    /// The addresses the loadable segments take, as linked.
    pub fn span(&self) -> std::ops::Range<u64> {
        let elf = self.elf();
        let segments = elf.segments().filter(|s| s.size() != 0);
        let (lo, hi) = segments.fold((u64::MAX, 0), |(lo, hi), s| {
            (lo.min(s.address()), hi.max(s.address() + s.size()))
        });
        lo.min(hi)..hi
    }

    /// Whether the file is position-independent (`ET_DYN`): its addresses move.
    pub fn is_pie(&self) -> bool {
        let elf = self.elf();
        elf.elf_header().e_type(elf.endian()) == object::elf::ET_DYN
    }

    /// The Go version the build info names (`go1.19.8`), from `.go.buildinfo`: a 16-byte
    /// header ("\xff Go buildinf:", pointer size, flags), then since Go 1.18 (flags bit 2)
    /// the version and module strings inline, each after its varint length; before, two
    /// pointers to Go strings.
    pub fn go_version(&self) -> Option<String> {
        let (_, info) = self.section(".go.buildinfo")?;
        if !info.starts_with(b"\xff Go buildinf:") || info.get(14) != Some(&8) {
            return None;
        }
        if info.get(15)? & 2 != 0 {
            let rest = info.get(32..)?;
            let (len, n) = super::gosym::uvarint(rest)?;
            let bytes = rest.get(n..n + usize::try_from(len).ok()?)?;
            return Some(String::from_utf8_lossy(bytes).into_owned());
        }
        let word =
            |b: &[u8], at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
        let header = self.read_at(word(&info, 16)?, 16)?;
        let bytes = self.read_at(word(&header, 0)?, usize::try_from(word(&header, 8)?).ok()?)?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `len` bytes at `addr` as the file holds them (initialised data only).
    pub fn read_at(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let (base, bytes) = self.section_at(addr)?;
        let at = usize::try_from(addr - base).ok()?;
        Some(bytes.get(at..at.checked_add(len)?)?.to_vec())
    }
}

/// The minor release of Go `version` (19 for `go1.19.8`).
pub fn go_minor(version: &str) -> Option<u32> {
    version
        .strip_prefix("go1.")?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
