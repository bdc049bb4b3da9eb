//! Bounds-checked little-endian reads over raw memory.
//!
//! CFI lives inside mapped ELF images that we only know by address, so a
//! slice (which promises that its whole range is dereferenceable) would
//! claim more than we know. A `Reader` instead checks every read against
//! an explicit `[start, end)` window that the creator vouched for.

use core::marker::PhantomData;

/// `DW_EH_PE_omit`: the value is absent.
pub(crate) const PE_OMIT: u8 = 0xff;

/// A cursor over `[start, end)` that never reads outside that window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    start: usize,
    pos: usize,
    end: usize,
    _mem: PhantomData<&'a [u8]>,
}

impl<'a> Reader<'a> {
    /// # Safety
    /// Every byte of `[start, end)` must be readable and unchanging for `'a`.
    pub(crate) unsafe fn new(start: usize, end: usize) -> Self {
        Reader {
            start,
            pos: start,
            end: end.max(start),
            _mem: PhantomData,
        }
    }

    #[cfg(test)]
    pub(crate) fn from_slice(bytes: &'a [u8]) -> Self {
        let start = bytes.as_ptr() as usize;
        // SAFETY: the slice is readable and immutable for 'a.
        unsafe { Reader::new(start, start + bytes.len()) }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// A reader positioned at `addr`, limited to the same window.
    pub(crate) fn at(&self, addr: usize) -> Option<Reader<'a>> {
        (self.start..=self.end)
            .contains(&addr)
            .then_some(Reader { pos: addr, ..*self })
    }

    /// A reader over the next `len` bytes; `self` skips past them.
    pub(crate) fn split(&mut self, len: u64) -> Option<Reader<'a>> {
        let len = usize::try_from(len).ok()?;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.end)?;
        let sub = Reader {
            start: self.pos,
            pos: self.pos,
            end,
            _mem: PhantomData,
        };
        self.pos = end;
        Some(sub)
    }

    pub(crate) fn skip(&mut self, len: u64) -> Option<()> {
        self.split(len).map(|_| ())
    }

    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let at = self.pos;
        self.skip(N as u64)?;
        // SAFETY: `skip` proved `[at, at + N)` lies inside the window the
        // constructor vouched for; an unaligned read of plain bytes.
        Some(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) })
    }

    /// The bytes up to the next NUL (not included), which must be inside
    /// the window; the reader moves past the NUL.
    pub(crate) fn cstr(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        while self.u8()? != 0 {}
        // SAFETY: `[start, self.pos)` was just read byte by byte inside the
        // window, which the constructor vouched for as readable for 'a.
        Some(unsafe { core::slice::from_raw_parts(start as *const u8, self.pos - start - 1) })
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|b| b[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.bytes().map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_le_bytes)
    }

    pub(crate) fn uleb(&mut self) -> Option<u64> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let byte = self.u8()?;
            if shift < 64 {
                value |= u64::from(byte & 0x7f) << shift;
            }
            shift = shift.saturating_add(7);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
    }

    pub(crate) fn sleb(&mut self) -> Option<i64> {
        let mut value = 0i64;
        let mut shift = 0u32;
        loop {
            let byte = self.u8()?;
            if shift < 64 {
                value |= i64::from(byte & 0x7f) << shift;
            }
            shift = shift.saturating_add(7);
            if byte & 0x80 == 0 {
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                return Some(value);
            }
        }
    }

    /// Reads the value part of a `DW_EH_PE_*` encoding without applying
    /// its base, as FDE address ranges require.
    pub(crate) fn encoded_raw(&mut self, enc: u8) -> Option<u64> {
        Some(match enc & 0x0f {
            0x00 | 0x04 => self.u64()?,
            0x01 => self.uleb()?,
            0x02 => u64::from(self.u16()?),
            0x03 => u64::from(self.u32()?),
            0x09 => self.sleb()? as u64,
            0x0a => self.u16()? as i16 as i64 as u64,
            0x0b => self.u32()? as i32 as i64 as u64,
            0x0c => self.u64()?,
            _ => return None,
        })
    }

    /// Reads a `DW_EH_PE_*` encoded pointer and applies its base:
    /// absolute, pc-relative, or relative to `datarel` (the eh_frame_hdr
    /// address; `.eh_frame` itself has no data base on x86_64). The
    /// indirect bit is ignored: we never follow such pointers.
    pub(crate) fn encoded(&mut self, enc: u8, datarel: Option<usize>) -> Option<usize> {
        let field = self.pos;
        let raw = self.encoded_raw(enc)? as usize;
        match enc & 0x70 {
            0x00 => Some(raw),
            0x10 => Some(field.wrapping_add(raw)),
            0x30 => Some(datarel?.wrapping_add(raw)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_round_trips_known_values() {
        let bytes = [0xe5, 0x8e, 0x26, 0x7f, 0x80, 0x7f, 0x02];
        let mut r = Reader::from_slice(&bytes);
        assert_eq!(r.uleb(), Some(624_485));
        assert_eq!(r.sleb(), Some(-1));
        assert_eq!(r.sleb(), Some(-128));
        assert_eq!(r.sleb(), Some(2));
        assert!(r.is_empty());
        assert_eq!(r.u8(), None);
    }

    #[test]
    fn reads_never_cross_the_window() {
        let bytes = [1u8, 2, 3];
        let mut r = Reader::from_slice(&bytes);
        assert_eq!(r.u32(), None);
        assert_eq!(r.u16(), Some(0x0201));
        assert_eq!(r.uleb(), Some(3));
        assert_eq!(r.uleb(), None);
        let unterminated = [0x80u8, 0x80];
        assert_eq!(Reader::from_slice(&unterminated).uleb(), None);
        assert!(r.at(bytes.as_ptr() as usize + 4).is_none());
        assert!(r.split(1).is_none());
    }

    #[test]
    fn pointer_encodings_apply_their_base() {
        let bytes = [0xfc, 0xff, 0xff, 0xff, 0x10, 0x00, 0x7e];
        let base = bytes.as_ptr() as usize;
        let mut r = Reader::from_slice(&bytes);
        // pcrel | sdata4: -4 relative to the field itself.
        assert_eq!(r.encoded(0x1b, None), Some(base - 4));
        // datarel | udata2.
        assert_eq!(r.encoded(0x32, Some(1000)), Some(1016));
        // sleb128, absolute.
        assert_eq!(r.encoded(0x09, None), Some(-2i64 as usize));
        // datarel without a data base, textrel, unknown formats: refused.
        let mut r = Reader::from_slice(&bytes);
        assert_eq!(r.clone().encoded(0x33, None), None);
        assert_eq!(r.clone().encoded(0x23, None), None);
        assert_eq!(r.encoded(0x07, None), None);
    }
}
