//! What the library publishes in the process for the `fdguard` command: the signal it answers
//! report requests on now, where its reports go and in which format, and the report schema. An
//! exported block (`SYMBOL`) the command reads with `process_vm_readv`, so that it never has to
//! trust `/proc/PID/environ` (which programs that set their title, nginx and redis among them,
//! overwrite) nor guess a signal the program may have taken over since.
//!
//! # Why a block in memory
//! The library must not create an fd in the program's process while it runs, and what it
//! publishes changes while it runs (the program takes the report signal; a fork child has
//! another pid, so another report path): plain stores into the block need no fd, no lock and no
//! allocation, from a signal handler or a fork child alike. Reading it needs the permission
//! `process_vm_readv` needs (the process's user, or root; the same the command needs for most
//! of what it does), and the command says so when it lacks it.
//!
//! The layout is `repr(C)` and versioned (`LAYOUT`); the command decodes a copy of its bytes
//! (`decode`) by the same offsets.

use std::mem::offset_of;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, Ordering};

use crate::config::Format;
use crate::schema::SCHEMA;

/// The exported symbol the block is.
pub const SYMBOL: &str = "fdguard_published";
/// This layout's version.
pub const LAYOUT: u32 = 1;
/// The longest report path published (longer ones are published as unknown).
pub const PATH_CAPACITY: usize = 4096;

/// What the report signal is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Report requests are taken on this signal.
    Answers(i32),
    /// `FDGUARD_SIGNAL=none`.
    NoneConfigured,
    /// The program has its own handler on every signal fdguard could use (a Go runtime takes
    /// them all): report requests are not taken.
    NoneFree,
    /// Not started (a dormant or detached library).
    NotStarted,
}

impl Signal {
    fn encode(self) -> i32 {
        match self {
            Signal::Answers(s) => s,
            Signal::NoneConfigured => -1,
            Signal::NoneFree => -2,
            Signal::NotStarted => 0,
        }
    }

    fn decode(v: i32) -> Signal {
        match v {
            s if s > 0 => Signal::Answers(s),
            -1 => Signal::NoneConfigured,
            -2 => Signal::NoneFree,
            _ => Signal::NotStarted,
        }
    }
}

/// Writes a path in pieces, in order, to the function it is given (no allocation).
pub type PathWriter<'a> = &'a dyn Fn(&mut dyn FnMut(&[u8]));

/// The block. Written by one thread at a time (at start, at attach, in a fork child, or where
/// the report signal moves: `signal` alone); `seq` is odd while the destination is rewritten.
#[repr(C)]
pub struct Published {
    layout: AtomicU32,
    seq: AtomicU32,
    schema: AtomicU32,
    signal: AtomicI32,
    /// 0: text, 1: JSON.
    format: AtomicU32,
    /// 0: stderr; else the length of `path`; `u32::MAX`: a path too long to publish.
    path_len: AtomicU32,
    path: [AtomicU8; PATH_CAPACITY],
}

impl Default for Published {
    fn default() -> Self {
        Self::new()
    }
}

impl Published {
    pub const fn new() -> Self {
        Self {
            layout: AtomicU32::new(LAYOUT),
            seq: AtomicU32::new(0),
            schema: AtomicU32::new(SCHEMA as u32),
            signal: AtomicI32::new(0),
            format: AtomicU32::new(0),
            path_len: AtomicU32::new(0),
            path: [const { AtomicU8::new(0) }; PATH_CAPACITY],
        }
    }

    pub const SIZE: usize = size_of::<Published>();

    pub fn set_signal(&self, s: Signal) {
        self.signal.store(s.encode(), Ordering::Release);
    }

    pub fn signal(&self) -> Signal {
        Signal::decode(self.signal.load(Ordering::Acquire))
    }

    /// The block's bytes, as another process reads them.
    pub fn copy(&self) -> Vec<u8> {
        let words = [
            self.layout.load(Ordering::Acquire),
            self.seq.load(Ordering::Acquire),
            self.schema.load(Ordering::Relaxed),
            self.signal.load(Ordering::Relaxed) as u32,
            self.format.load(Ordering::Relaxed),
            self.path_len.load(Ordering::Relaxed),
        ];
        let mut b: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        b.extend(self.path.iter().map(|c| c.load(Ordering::Relaxed)));
        b
    }

    /// Where reports go, as this process published it (read again while it is rewritten).
    pub fn destination(&self) -> Destination {
        loop {
            match decode(&self.copy()) {
                Ok(v) => return v.destination,
                Err(DecodeError::Changing) => std::hint::spin_loop(),
                Err(_) => return Destination::Unknown,
            }
        }
    }

    /// Publishes where reports go: stderr (`None`), or the path `write` produces through the
    /// closure it is given (called with pieces of the path, in order; no allocation here).
    pub fn set_destination(&self, format: Format, write: Option<PathWriter>) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        self.format
            .store(u32::from(format == Format::Json), Ordering::Relaxed);
        let len = match write {
            None => 0,
            Some(write) => {
                let mut at = 0usize;
                let mut overflow = false;
                write(&mut |piece: &[u8]| {
                    for b in piece {
                        match self.path.get(at) {
                            Some(slot) => slot.store(*b, Ordering::Relaxed),
                            None => overflow = true,
                        }
                        at += 1;
                    }
                });
                if overflow || at == 0 {
                    u32::MAX
                } else {
                    at as u32
                }
            }
        };
        self.path_len.store(len, Ordering::Relaxed);
        self.seq.fetch_add(1, Ordering::AcqRel);
    }
}

/// Where reports go, as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    /// The path as the process sees it (relative to its working directory if not absolute).
    File(Vec<u8>),
    /// A path longer than the block holds.
    Unknown,
}

/// A decoded copy of the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The report JSON schema the library writes.
    pub schema: u32,
    pub signal: Signal,
    pub format: Format,
    pub destination: Destination,
}

/// Why a copy of the block cannot be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the block has (read past a mapping's end, or another version).
    Short,
    OtherLayout(u32),
    /// The block was being rewritten: read it again.
    Changing,
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes a copy of the block's bytes, read from another process.
pub fn decode(b: &[u8]) -> Result<View, DecodeError> {
    let at = |offset: usize| word(b, offset).ok_or(DecodeError::Short);
    let layout = at(offset_of!(Published, layout))?;
    if layout != LAYOUT {
        return Err(DecodeError::OtherLayout(layout));
    }
    if b.len() < Published::SIZE {
        return Err(DecodeError::Short);
    }
    if at(offset_of!(Published, seq))? % 2 == 1 {
        return Err(DecodeError::Changing);
    }
    let path_len = at(offset_of!(Published, path_len))?;
    let start = offset_of!(Published, path);
    let destination = match path_len {
        0 => Destination::Stderr,
        n if n as usize <= PATH_CAPACITY => {
            Destination::File(b[start..start + n as usize].to_vec())
        }
        _ => Destination::Unknown,
    };
    Ok(View {
        schema: at(offset_of!(Published, schema))?,
        signal: Signal::decode(at(offset_of!(Published, signal))? as i32),
        format: if at(offset_of!(Published, format))? == 1 {
            Format::Json
        } else {
            Format::Text
        },
        destination,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(p: &Published) -> Vec<u8> {
        let b = p.copy();
        assert_eq!(b.len(), Published::SIZE);
        b
    }

    #[test]
    fn what_is_published_decodes() {
        let p = Published::new();
        let v = decode(&bytes(&p)).unwrap();
        assert_eq!(
            v,
            View {
                schema: SCHEMA as u32,
                signal: Signal::NotStarted,
                format: Format::Text,
                destination: Destination::Stderr,
            }
        );
        p.set_signal(Signal::Answers(64));
        p.set_destination(
            Format::Json,
            Some(&|out: &mut dyn FnMut(&[u8])| {
                out(b"/tmp/r.");
                out(b"42");
                out(b".log");
            }),
        );
        let v = decode(&bytes(&p)).unwrap();
        assert_eq!(v.signal, Signal::Answers(64));
        assert_eq!(v.format, Format::Json);
        assert_eq!(v.destination, Destination::File(b"/tmp/r.42.log".to_vec()));
        for s in [Signal::NoneConfigured, Signal::NoneFree] {
            p.set_signal(s);
            assert_eq!(decode(&bytes(&p)).unwrap().signal, s);
        }
    }

    #[test]
    fn long_paths_torn_copies_and_other_layouts_are_told_apart() {
        let p = Published::new();
        let long = vec![b'x'; PATH_CAPACITY + 1];
        p.set_destination(Format::Text, Some(&|out: &mut dyn FnMut(&[u8])| out(&long)));
        assert_eq!(
            decode(&bytes(&p)).unwrap().destination,
            Destination::Unknown
        );
        let mut b = bytes(&p);
        b[offset_of!(Published, seq)] |= 1;
        assert_eq!(decode(&b), Err(DecodeError::Changing));
        b[0] = 9;
        assert_eq!(decode(&b), Err(DecodeError::OtherLayout(9)));
        assert_eq!(decode(&b[..3]), Err(DecodeError::Short));
    }
}
