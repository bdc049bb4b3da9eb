//! `.eh_frame_hdr` (the PT_GNU_EH_FRAME segment): a sorted table of
//! (initial location, FDE address) pairs that turns "which FDE covers this
//! pc" into a binary search.

use super::reader::{PE_OMIT, Reader};

/// `DW_EH_PE_datarel | DW_EH_PE_sdata4`: the only table encoding GNU ld,
/// gold, lld and mold emit.
const TABLE_ENC: u8 = 0x3b;
const ENTRY_SIZE: usize = 8;

pub(crate) struct EhFrameHdr<'a> {
    /// Address of the header: the base of datarel values.
    base: usize,
    table: Reader<'a>,
    count: usize,
}

impl<'a> EhFrameHdr<'a> {
    /// `hdr` must be positioned at the start of the header.
    pub(crate) fn parse(mut hdr: Reader<'a>) -> Option<Self> {
        let base = hdr.pos();
        let version = hdr.u8()?;
        let frame_ptr_enc = hdr.u8()?;
        let count_enc = hdr.u8()?;
        let table_enc = hdr.u8()?;
        if version != 1 || table_enc != TABLE_ENC || count_enc == PE_OMIT {
            return None;
        }
        if frame_ptr_enc != PE_OMIT {
            hdr.encoded(frame_ptr_enc, Some(base))?;
        }
        let count = hdr.encoded(count_enc, Some(base))?;
        // Proves the whole table is inside the window once, so a bogus
        // count cannot send the search outside it.
        let table = hdr;
        hdr.skip(count.checked_mul(ENTRY_SIZE)? as u64)?;
        Some(EhFrameHdr { base, table, count })
    }

    /// Address of the FDE whose range may contain `pc`: the last entry
    /// starting at or before it. The caller still checks the FDE's range.
    pub(crate) fn find_fde(&self, pc: usize) -> Option<usize> {
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid)?.0 <= pc {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Some(self.entry(lo.checked_sub(1)?)?.1)
    }

    fn entry(&self, index: usize) -> Option<(usize, usize)> {
        let mut r = self.table.at(self.table.pos() + index * ENTRY_SIZE)?;
        let start = self.base.wrapping_add(r.u32()? as i32 as isize as usize);
        let fde = self.base.wrapping_add(r.u32()? as i32 as isize as usize);
        Some((start, fde))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(count: u32, starts: &[i32]) -> Vec<u8> {
        // eh_frame_ptr pcrel|sdata4, count udata4, table datarel|sdata4.
        let mut v = vec![1, 0x1b, 0x03, TABLE_ENC];
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&count.to_le_bytes());
        for (i, s) in starts.iter().enumerate() {
            v.extend_from_slice(&s.to_le_bytes());
            v.extend_from_slice(&(1000 + i as i32).to_le_bytes());
        }
        v
    }

    #[test]
    fn binary_search_picks_last_entry_not_after_pc() {
        let bytes = header(4, &[-100, 10, 20, 300]);
        let base = bytes.as_ptr() as usize;
        let hdr = EhFrameHdr::parse(Reader::from_slice(&bytes)).unwrap();
        let fde = |off: isize| hdr.find_fde(base.wrapping_add(off as usize));
        assert_eq!(fde(-101), None);
        assert_eq!(fde(-100), Some(base + 1000));
        assert_eq!(fde(9), Some(base + 1000));
        assert_eq!(fde(10), Some(base + 1001));
        assert_eq!(fde(299), Some(base + 1002));
        assert_eq!(fde(100_000), Some(base + 1003));
    }

    #[test]
    fn rejects_bad_headers() {
        // Count larger than the table present.
        let bytes = header(5, &[0, 1, 2, 3]);
        assert!(EhFrameHdr::parse(Reader::from_slice(&bytes)).is_none());
        let mut bytes = header(1, &[0]);
        bytes[0] = 2; // version
        assert!(EhFrameHdr::parse(Reader::from_slice(&bytes)).is_none());
        let mut bytes = header(1, &[0]);
        bytes[3] = 0x1b; // table encoding we do not handle
        assert!(EhFrameHdr::parse(Reader::from_slice(&bytes)).is_none());
        let empty = header(0, &[]);
        let hdr = EhFrameHdr::parse(Reader::from_slice(&empty)).unwrap();
        assert_eq!(hdr.find_fde(empty.as_ptr() as usize), None);
    }
}
