//! What kind of program fdguard was loaded into: Go programs make their system calls without
//! libc, so fdguard sees none of their fds being created and must say so instead of looking
//! as if nothing leaked.

use std::io::{Read, Seek, SeekFrom};

/// Section names only the Go toolchain writes.
const GO_SECTIONS: [&[u8]; 2] = [b".go.buildinfo", b".gopclntab"];

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The section names of a little-endian ELF64 file, read through `read_at(offset, len)`.
pub fn section_names(
    mut read_at: impl FnMut(u64, usize) -> Option<Vec<u8>>,
) -> Option<Vec<Vec<u8>>> {
    let eh = read_at(0, 64)?;
    if eh.get(..4)? != b"\x7fELF" || *eh.get(4)? != 2 || *eh.get(5)? != 1 {
        return None; // not ELF64 little-endian
    }
    let shoff = u64_at(&eh, 0x28)?;
    let shentsize = u16_at(&eh, 0x3a)? as usize;
    let shnum = u16_at(&eh, 0x3c)? as usize;
    let shstrndx = u16_at(&eh, 0x3e)? as usize;
    if shentsize < 64 || shnum == 0 || shnum > 4096 || shstrndx >= shnum {
        return None;
    }
    let table = read_at(shoff, shentsize * shnum)?;
    let header = |i: usize| table.get(i * shentsize..(i + 1) * shentsize);
    let strtab = header(shstrndx)?;
    let names = read_at(
        u64_at(strtab, 0x18)?,
        (u64_at(strtab, 0x20)? as usize).min(1 << 20),
    )?;
    (0..shnum)
        .map(|i| {
            let at = u32_at(header(i)?, 0)? as usize;
            let rest = names.get(at..)?;
            Some(rest[..rest.iter().position(|b| *b == 0)?].to_vec())
        })
        .collect()
}

/// True if the program at `path` was built by the Go toolchain.
pub fn is_go_program(path: &str) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let names = section_names(|off, len| {
        let mut buf = vec![0u8; len];
        f.seek(SeekFrom::Start(off)).ok()?;
        f.read_exact(&mut buf).ok()?;
        Some(buf)
    });
    names.is_some_and(|n| n.iter().any(|s| GO_SECTIONS.contains(&s.as_slice())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_of(path: &str) -> Vec<Vec<u8>> {
        let bytes = std::fs::read(path).unwrap();
        section_names(|off, len| {
            bytes
                .get(off as usize..off as usize + len)
                .map(<[u8]>::to_vec)
        })
        .unwrap()
    }

    #[test]
    fn reads_section_names_of_a_real_binary() {
        let exe = std::env::current_exe().unwrap();
        let names = names_of(exe.to_str().unwrap());
        assert!(names.iter().any(|n| n == b".text"));
        assert!(names.iter().any(|n| n == b".eh_frame"));
        assert!(!is_go_program(exe.to_str().unwrap()));
    }

    #[test]
    fn rejects_what_is_not_elf64() {
        assert!(section_names(|_, len| Some(vec![0u8; len])).is_none());
        assert!(section_names(|_, _| None).is_none());
        assert!(!is_go_program("/nonexistent"));
    }
}
