//! Where CPython keeps what fdguard reads: offsets into its thread state, interpreter frames,
//! code, str and bytes objects. 3.11 and 3.12 from built-in tables (checked against their
//! `Include/internal` headers by `offsetof`, for both pyenv's 3.11.7 and 3.12.1 and Debian's
//! 3.11.2); 3.13 describes itself in `_PyRuntime.debug_offsets` (the block debuggers and
//! profilers read), which fdguard reads instead of a table. Other versions: no layout.

use super::memory::MAX_WORDS_READ;

/// Offsets, in bytes, of one CPython build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `sizeof(PyThreadState)`: the part read with plain loads.
    pub ts_size: usize,
    /// `PyThreadState.native_thread_id`: the kernel tid, which confirms the layout per capture.
    pub ts_native_thread_id: usize,
    /// Where the innermost frame is: `PyThreadState.cframe`, then `_PyCFrame.current_frame`
    /// (3.11, 3.12), or `PyThreadState.current_frame` (3.13).
    pub ts_frame: FrameAt,
    /// `PyThreadState.datastack_chunk`, followed by `datastack_top` and `datastack_limit`.
    pub ts_datastack_chunk: usize,
    /// `_PyInterpreterFrame`: `f_code` (`f_executable`), `previous`, `prev_instr`
    /// (`instr_ptr`), `owner` (a byte, read as the low byte of a word: the frame goes on
    /// past it); `frame_read` bytes hold them all as words.
    pub fr_code: usize,
    pub fr_previous: usize,
    pub fr_instr: usize,
    pub fr_owner: usize,
    pub frame_read: usize,
    /// Frames with this `owner` are the interpreter's own (3.12's entry frames on the C
    /// stack, `FRAME_OWNED_BY_CSTACK`); 3.13's have `None` as their code instead.
    pub skip_owner: Option<u8>,
    /// `PyCodeObject`: `co_code_adaptive` (the bytecode, inline) and what names a frame.
    pub co_code_adaptive: usize,
    pub co_filename: usize,
    pub co_name: usize,
    pub co_qualname: usize,
    pub co_linetable: usize,
    pub co_firstlineno: usize,
    /// `PyObject.ob_type`, `PyVarObject.ob_size` (a code object's size in code units).
    pub ob_type: usize,
    pub ob_size: usize,
    /// `PyASCIIObject.state` and `.length`, `sizeof(PyASCIIObject)` (where an ASCII string's
    /// characters start); `sizeof(PyCompactUnicodeObject)` (where other compact strings'
    /// start; its `utf8_length` and `utf8` follow the ASCII header).
    pub str_state: usize,
    pub str_length: usize,
    pub str_ascii_size: usize,
    pub str_compact_size: usize,
    /// `PyBytesObject.ob_sval`.
    pub bytes_sval: usize,
}

/// Where a thread state says its innermost frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameAt {
    /// Through the `_PyCFrame` at `cframe`: its field at `current_frame`.
    CFrame {
        cframe: usize,
        current_frame: usize,
    },
    Direct(usize),
}

/// 3.11 (3.11.2 and 3.11.7 agree).
pub const PY311: Layout = Layout {
    ts_size: 360,
    ts_native_thread_id: 160,
    ts_frame: FrameAt::CFrame {
        cframe: 56,
        current_frame: 8,
    },
    ts_datastack_chunk: 296,
    fr_code: 32,
    fr_previous: 48,
    fr_instr: 56,
    fr_owner: 69,
    frame_read: 77,
    skip_owner: None,
    co_code_adaptive: 184,
    co_filename: 112,
    co_name: 120,
    co_qualname: 128,
    co_linetable: 136,
    co_firstlineno: 72,
    ob_type: 8,
    ob_size: 16,
    str_state: 32,
    str_length: 16,
    str_ascii_size: 48,
    str_compact_size: 72,
    bytes_sval: 32,
};

/// 3.12 (3.12.1).
pub const PY312: Layout = Layout {
    ts_size: 288,
    ts_native_thread_id: 144,
    ts_frame: FrameAt::CFrame {
        cframe: 56,
        current_frame: 0,
    },
    ts_datastack_chunk: 232,
    fr_code: 0,
    fr_previous: 8,
    fr_instr: 56,
    fr_owner: 70,
    frame_read: 78,
    skip_owner: Some(3),
    co_code_adaptive: 192,
    co_firstlineno: 68,
    str_ascii_size: 40,
    str_compact_size: 56,
    ..PY311
};

/// `_Py_DebugOffsets` (3.13) as 64-bit words: the fields fdguard uses, by index.
mod debug {
    pub const COOKIE: &[u8; 8] = b"xdebugpy";
    pub const VERSION: usize = 1;
    pub const FREE_THREADED: usize = 2;
    pub const TS_SIZE: usize = 19;
    pub const TS_CURRENT_FRAME: usize = 23;
    pub const TS_NATIVE_THREAD_ID: usize = 25;
    pub const TS_DATASTACK_CHUNK: usize = 26;
    pub const FR_PREVIOUS: usize = 29;
    pub const FR_EXECUTABLE: usize = 30;
    pub const FR_INSTR_PTR: usize = 31;
    pub const FR_OWNER: usize = 33;
    pub const CO_FILENAME: usize = 35;
    pub const CO_NAME: usize = 36;
    pub const CO_QUALNAME: usize = 37;
    pub const CO_LINETABLE: usize = 38;
    pub const CO_FIRSTLINENO: usize = 39;
    pub const CO_CODE_ADAPTIVE: usize = 43;
    pub const OB_TYPE: usize = 45;
    pub const BYTES_OB_SIZE: usize = 65;
    pub const BYTES_OB_SVAL: usize = 66;
    pub const STR_STATE: usize = 68;
    pub const STR_LENGTH: usize = 69;
    pub const STR_ASCII_SIZE: usize = 70;
    /// Words in 3.13's block.
    pub const WORDS: usize = 73;
}

/// Words of `_PyRuntime` to read for `from_debug_offsets`.
pub const DEBUG_WORDS: usize = debug::WORDS;

/// Why a build's layout is not known, for the report's header.
pub const NOT_FREE_THREADED: &str = "a free-threaded build";

/// The layout a 3.13 build describes in the first `DEBUG_WORDS` words of `_PyRuntime`, if
/// they are its debug offsets for `version` (`PY_VERSION_HEX`), and every offset is one a
/// plain 64-bit build could have. `Err` says why not.
pub fn from_debug_offsets(words: &[u64], version: u64) -> Result<Layout, &'static str> {
    let w = |i: usize| {
        words
            .get(i)
            .and_then(|v| usize::try_from(*v).ok())
            .unwrap_or(usize::MAX)
    };
    let cookie = words.first().map(|c| c.to_ne_bytes());
    if cookie.as_ref() != Some(debug::COOKIE) || words.len() < debug::WORDS {
        return Err("no debug offsets in _PyRuntime");
    }
    if words[debug::VERSION] != version {
        return Err("its debug offsets are of another version");
    }
    if words[debug::FREE_THREADED] != 0 {
        return Err(NOT_FREE_THREADED);
    }
    let ts_size = w(debug::TS_SIZE);
    let ascii = w(debug::STR_ASCII_SIZE);
    let layout = Layout {
        ts_size,
        ts_native_thread_id: w(debug::TS_NATIVE_THREAD_ID),
        ts_frame: FrameAt::Direct(w(debug::TS_CURRENT_FRAME)),
        ts_datastack_chunk: w(debug::TS_DATASTACK_CHUNK),
        fr_code: w(debug::FR_EXECUTABLE),
        fr_previous: w(debug::FR_PREVIOUS),
        fr_instr: w(debug::FR_INSTR_PTR),
        fr_owner: w(debug::FR_OWNER),
        frame_read: 0,
        skip_owner: None,
        co_code_adaptive: w(debug::CO_CODE_ADAPTIVE),
        co_filename: w(debug::CO_FILENAME),
        co_name: w(debug::CO_NAME),
        co_qualname: w(debug::CO_QUALNAME),
        co_linetable: w(debug::CO_LINETABLE),
        co_firstlineno: w(debug::CO_FIRSTLINENO),
        ob_type: w(debug::OB_TYPE),
        ob_size: w(debug::BYTES_OB_SIZE),
        str_state: w(debug::STR_STATE),
        str_length: w(debug::STR_LENGTH),
        str_ascii_size: ascii,
        // `utf8_length` and `utf8` after the ASCII header, as since 3.12.
        str_compact_size: ascii.saturating_add(16),
        bytes_sval: w(debug::BYTES_OB_SVAL),
    };
    let frame_read = [
        layout.fr_code,
        layout.fr_previous,
        layout.fr_instr,
        layout.fr_owner,
    ]
    .into_iter()
    .map(|o| o.saturating_add(8))
    .max()
    .unwrap_or(usize::MAX);
    let ts_fields = [
        layout.ts_native_thread_id,
        w(debug::TS_CURRENT_FRAME),
        layout.ts_datastack_chunk.saturating_add(16),
    ];
    // Every field within what it is read with: `Vouched::words` reads at most
    // `MAX_WORDS_READ` bytes of an object at once.
    let within = |fields: &[usize], size: usize| fields.iter().all(|o| o.saturating_add(8) <= size);
    let sane = within(&ts_fields, ts_size)
        && ts_size <= 4096
        && frame_read <= MAX_WORDS_READ
        && layout.co_code_adaptive <= 4096
        && within(
            &[
                layout.co_filename,
                layout.co_name,
                layout.co_qualname,
                layout.co_linetable,
                layout.co_firstlineno,
            ],
            layout.co_code_adaptive.min(MAX_WORDS_READ),
        )
        && within(
            &[
                layout.str_state,
                layout.str_length,
                layout.ob_type,
                layout.ob_size,
            ],
            ascii,
        )
        && layout.str_compact_size <= MAX_WORDS_READ
        && layout.bytes_sval <= MAX_WORDS_READ;
    if !sane {
        return Err("its debug offsets are out of the range fdguard reads");
    }
    Ok(Layout {
        frame_read,
        ..layout
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3.13.0's debug offsets, as its `_PyRuntime` has them (read with ctypes).
    fn py3130() -> Vec<u64> {
        let mut w = vec![0u64; debug::WORDS];
        w[0] = u64::from_ne_bytes(*debug::COOKIE);
        w[debug::VERSION] = 0x030d_00f0;
        w[19..28].copy_from_slice(&[304, 0, 8, 16, 72, 152, 160, 232, 32]);
        w[28..34].copy_from_slice(&[80, 8, 0, 56, 72, 70]);
        w[34..46].copy_from_slice(&[208, 112, 120, 128, 136, 68, 52, 96, 104, 200, 16, 8]);
        w[64..71].copy_from_slice(&[40, 16, 32, 64, 32, 16, 40]);
        w
    }

    #[test]
    fn debug_offsets_of_3_13_give_its_layout() {
        let l = from_debug_offsets(&py3130(), 0x030d_00f0).unwrap();
        assert_eq!(l.ts_frame, FrameAt::Direct(72));
        assert_eq!((l.ts_native_thread_id, l.ts_datastack_chunk), (160, 232));
        assert_eq!((l.fr_code, l.fr_previous, l.fr_instr), (0, 8, 56));
        assert_eq!(l.frame_read, 78);
        assert_eq!((l.co_code_adaptive, l.co_firstlineno), (200, 68));
        assert_eq!((l.str_ascii_size, l.str_compact_size), (40, 56));
        // The same offsets 3.12's table has, where 3.13 did not move them.
        assert_eq!(
            (l.co_filename, l.co_qualname, l.co_linetable),
            (PY312.co_filename, PY312.co_qualname, PY312.co_linetable)
        );
    }

    #[test]
    fn debug_offsets_are_refused_when_they_do_not_fit() {
        let good = py3130();
        assert!(from_debug_offsets(&good, 0x030d_01f0).is_err());
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(from_debug_offsets(&bad, 0x030d_00f0).is_err());
        let mut free = good.clone();
        free[debug::FREE_THREADED] = 1;
        assert_eq!(
            from_debug_offsets(&free, 0x030d_00f0),
            Err(NOT_FREE_THREADED)
        );
        let mut far = good.clone();
        far[debug::FR_PREVIOUS] = 1 << 20;
        assert!(from_debug_offsets(&far, 0x030d_00f0).is_err());
        assert!(from_debug_offsets(&good[..10], 0x030d_00f0).is_err());
    }
}
