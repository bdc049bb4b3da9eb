//! How the library keeps what it learns of an fd at creation in its table, without allocating:
//! the end of the path the program gave (`PathTail`) and call-specific facts (`Detail`),
//! packed into words and turned back into text only at report time.

/// How many bytes of a path the table keeps: the end of it, where the file name is.
pub const PATH_TAIL: usize = 32;

/// The last `PATH_TAIL` bytes of a path as the program gave it, kept inline in the fd table: no
/// hashing or allocation at `open`, and memory bounded by the number of open fds however many
/// distinct names a program uses. The kernel's full path is read at report time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathTail([u64; PATH_WORDS]);

const PATH_WORDS: usize = PATH_TAIL / 8;
// `PathTail::of` builds exactly four words.
const _: () = assert!(PATH_WORDS == 4);

impl PathTail {
    /// The tail of `path` and the path's full length.
    ///
    /// Built from whole-word loads of the program's string, never through a byte buffer: a
    /// word read back from a buffer just filled byte-wise (or by `memcpy`) stalls store
    /// forwarding, ~15 ns on every `open` here.
    #[inline(always)]
    pub fn of(path: &[u8]) -> (PathTail, u32) {
        let tail = &path[path.len().saturating_sub(PATH_TAIL)..];
        let n = tail.len();
        let words = if n >= 8 {
            // Word `i` is bytes 8i.. of the tail, loaded from where a whole word still fits
            // (8i, or n - 8 for the last, partial one) and shifted down by the bytes it loaded
            // too early; a word past the end shifts out completely. Four loads, no branches:
            // the hot path's size is what costs here, since each system call leaves the
            // instruction cache cold.
            std::array::from_fn(|i| {
                let at = (8 * i).min(n - 8);
                let skip = (8 * i - at) as u32;
                let word = tail[at..at + 8].try_into().map_or(0, u64::from_le_bytes);
                word.checked_shr(8 * skip).unwrap_or(0)
            })
        } else {
            [partial_word(tail), 0, 0, 0]
        };
        (PathTail(words), path.len() as u32)
    }

    /// True when no path was recorded (or it was empty).
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.0.iter().fold(0, |any, w| any | w) == 0
    }

    /// The path as text: `…` plus the tail when the path was longer than the tail kept.
    pub fn text(&self, full_len: u32) -> String {
        let bytes: Vec<u8> = self.0.iter().flat_map(|w| w.to_le_bytes()).collect();
        let kept = (full_len as usize).min(PATH_TAIL);
        let tail = String::from_utf8_lossy(&bytes[..kept]);
        if full_len as usize > PATH_TAIL {
            format!("…{tail}")
        } else {
            tail.into_owned()
        }
    }

    /// The tail as the table stores it.
    pub fn words(&self) -> [u64; PATH_WORDS] {
        self.0
    }

    pub fn from_words(w: [u64; PATH_WORDS]) -> PathTail {
        PathTail(w)
    }
}

/// Up to 7 bytes as the low bytes of a little-endian word, from at most two loads.
#[inline(always)]
fn partial_word(b: &[u8]) -> u64 {
    let n = b.len();
    let le32 = |at: usize| {
        b.get(at..at + 4)
            .and_then(|c| c.try_into().ok())
            .map_or(0, |c| u64::from(u32::from_le_bytes(c)))
    };
    match n {
        0 => 0,
        1..=3 => b
            .iter()
            .enumerate()
            .fold(0, |v, (i, &c)| v | u64::from(c) << (8 * i)),
        // Two overlapping 4-byte loads; the bytes they share are equal, so OR joins them.
        _ => le32(0) | le32(n - 4) << (8 * (n - 4)),
    }
}

/// Call-specific facts packed into `FdRecord::detail` (8 bits of tag, 56 of payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    None,
    /// A path (or command, for `popen`; name, for `memfd_create`) as the program gave it: its
    /// full length; its last bytes are in `FdRecord::path`.
    Path(u32),
    /// Socket domain, type (with flags) and protocol as passed to `socket`/`socketpair`.
    Socket {
        domain: u16,
        ty: u32,
        protocol: u16,
    },
    /// The fd this one came from: the listener of `accept`, the source of `dup`, the socket of
    /// `recvmsg`.
    FromFd(i32),
    /// The process a pidfd refers to.
    Pid(i32),
}

impl Detail {
    const TAG_SHIFT: u32 = 56;

    #[inline(always)]
    pub fn pack(self) -> u64 {
        let (tag, payload): (u64, u64) = match self {
            Detail::None => (0, 0),
            Detail::Path(id) => (1, id as u64),
            Detail::Socket {
                domain,
                ty,
                protocol,
            } => (
                2,
                domain as u64 | ((ty as u64) << 16) | ((protocol as u64) << 48),
            ),
            Detail::FromFd(fd) => (3, fd as u32 as u64),
            Detail::Pid(pid) => (4, pid as u32 as u64),
        };
        (tag << Self::TAG_SHIFT) | (payload & ((1 << Self::TAG_SHIFT) - 1))
    }

    pub fn unpack(v: u64) -> Detail {
        let payload = v & ((1 << Self::TAG_SHIFT) - 1);
        match v >> Self::TAG_SHIFT {
            1 => Detail::Path(payload as u32),
            2 => Detail::Socket {
                domain: payload as u16,
                ty: (payload >> 16) as u32,
                protocol: (payload >> 48) as u16,
            },
            3 => Detail::FromFd(payload as u32 as i32),
            4 => Detail::Pid(payload as u32 as i32),
            _ => Detail::None,
        }
    }
}

#[cfg(test)]
mod detail_tests {
    use super::*;

    #[test]
    fn path_tails_keep_the_end_and_mark_truncation() {
        let (t, n) = PathTail::of(b"/etc/hosts");
        assert_eq!((t.text(n), n), ("/etc/hosts".to_string(), 10));
        let long = b"/var/lib/postgresql/15/main/base/16384/2619_fsm";
        let (t, n) = PathTail::of(long);
        assert_eq!(t.text(n), "…esql/15/main/base/16384/2619_fsm");
        assert_eq!(PathTail::from_words(t.words()), t);
        let (t, n) = PathTail::of(b"");
        assert_eq!(t.text(n), "");
    }

    #[test]
    fn path_tails_are_the_last_bytes_for_every_length() {
        let all: Vec<u8> = (1..=45).collect();
        for len in 0..=all.len() {
            let path = &all[..len];
            let (t, n) = PathTail::of(path);
            let kept = &path[len.saturating_sub(PATH_TAIL)..];
            let mut want = [0u8; PATH_TAIL];
            want[..kept.len()].copy_from_slice(kept);
            let got: Vec<u8> = t.words().iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(
                (got.as_slice(), n as usize),
                (&want[..], len),
                "length {len}"
            );
        }
    }

    #[test]
    fn details_round_trip() {
        for d in [
            Detail::None,
            Detail::Path(0),
            Detail::Path(u32::MAX),
            Detail::Socket {
                domain: libc::AF_INET6 as u16,
                ty: (libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u32,
                protocol: 6,
            },
            Detail::FromFd(0),
            Detail::FromFd(i32::MAX),
            Detail::Pid(4242),
        ] {
            assert_eq!(Detail::unpack(d.pack()), d);
        }
    }
}
