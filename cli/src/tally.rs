//! One process's open fds counted by kind, for the host view (`top`, `metrics`): what each fd
//! link says, read as fast as the kernel allows.
//!
//! Reading a link (`readlinkat` in `/proc/PID/fd`) is what costs: 1.5 to 2.5 µs each, most of
//! it the kernel finding the fd's entry and checking the right to read it. Listing the
//! directory first cost about 0.9 µs more per fd (the kernel makes an entry for each, 18 ms
//! for 20,000 fds), so it is listed only for what reading by number does not find: since
//! Linux 6.2 the directory's size is the number of fds open, and fds are dense in practice
//! (the kernel gives the lowest free number), so the numbers below that count are read
//! directly, and only the fds above it (bash's 255, fdguard's own above the program's, a
//! table with holes) are listed, from the count on. At most `count` numbers are tried and
//! the listing ends by itself: fds opened or closed meanwhile cannot make it loop. A large
//! table is read on several threads, each taking the next numbers not yet taken.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use fdguard_core::fdinfo::link_inode;
use fdguard_core::kind::FdKind;

use crate::fds::{PathIsDir, kind_of};
use crate::os::FdLinks;

/// Fewest fd numbers worth a thread of their own. Reading a few processes' small tables on
/// threads did not pay (the quiet host took 2.6-2.9 ms on two threads, 2.1-2.5 on one):
/// starting a thread and waiting for it cost what it saved.
const PER_THREAD: usize = 2048;
/// Fd numbers a thread takes at a time (about 1 ms of reading).
const CHUNK: usize = 512;

/// What one process's fd links say, added up.
#[derive(Debug, Default)]
pub struct Tally {
    pub open: usize,
    pub by_kind: BTreeMap<FdKind, usize>,
    /// Inodes of the sockets among them.
    pub sockets: Vec<u64>,
}

/// This user may not read the process's fd links (another user's, or a protected one).
#[derive(Debug)]
pub struct Refused;

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.open += other.open;
        for (kind, n) in other.by_kind {
            *self.by_kind.entry(kind).or_default() += n;
        }
        self.sockets.extend(other.sockets);
    }
}

/// Counts the open fds of the process whose `/proc/PID/fd` `links` is, on up to `threads`
/// threads. `counts` says whether this kernel gives the number of fds as the directory's
/// size (see `counts_fds`); without it, the directory is listed.
pub fn tally(links: &FdLinks, counts: bool, threads: usize) -> Result<Tally, Refused> {
    let count = links.count().filter(|_| counts);
    if counts && count.is_none() {
        // No fd open: a kernel thread, a zombie.
        return Ok(Tally::default());
    }
    let count = count.unwrap_or(0);
    let end = i32::try_from(count).unwrap_or(i32::MAX);
    let threads = threads.min(count / PER_THREAD).max(1);
    let mut tally = if threads > 1 {
        read_shared(links, end, threads)?
    } else {
        let mut reader = Reader::new(links);
        reader.read(0..end)?;
        reader.tally
    };
    if tally.open < count || !counts {
        // Fds at or above the count (or closed since it was taken): the listing has them.
        let mut reader = Reader::new(links);
        reader.read(links.numbers_from(end).unwrap_or_default())?;
        tally.merge(reader.tally);
    }
    Ok(tally)
}

/// True if this kernel gives a `/proc/PID/fd` directory's number of fds as its size
/// (Linux 6.2 and later): this process's own has at least the one just opened.
pub fn counts_fds() -> bool {
    crate::os::ProcDir::open(std::process::id() as i32)
        .and_then(|p| p.fd_links())
        .is_ok_and(|l| l.count().is_some())
}

/// Reads fds `0..end` on `threads` threads. Each takes the next `CHUNK` numbers no thread has
/// taken yet: a thread the scheduler keeps waiting (the other core busy) holds up the sample by
/// one chunk at most, where halves fixed in advance would hold it up by the whole half.
fn read_shared(links: &FdLinks, end: i32, threads: usize) -> Result<Tally, Refused> {
    let end = usize::try_from(end).unwrap_or(0);
    let next = AtomicUsize::new(0);
    let take = |links: &FdLinks| {
        let mut reader = Reader::new(links);
        loop {
            let start = next.fetch_add(CHUNK, Ordering::Relaxed);
            if start >= end {
                return Ok(reader.tally);
            }
            // Below `end`, which came from an i32.
            let range = start as i32..(start + CHUNK).min(end) as i32;
            reader.read(range)?;
        }
    };
    std::thread::scope(|s| {
        let others: Vec<_> = (1..threads)
            .map(|_| {
                s.spawn(|| {
                    // A description of its own (`FdLinks::reopen`).
                    let own = links.reopen();
                    take(own.as_ref().unwrap_or(links))
                })
            })
            .collect();
        let mut tally = take(links);
        for other in others {
            let other = other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            tally = match (tally, other) {
                (Ok(mut t), Ok(o)) => {
                    t.merge(o);
                    Ok(t)
                }
                _ => Err(Refused),
            };
        }
        tally
    })
}

/// Reads fd links into a tally, on one thread.
struct Reader<'a> {
    links: &'a FdLinks,
    tally: Tally,
    /// One path's kind is asked once per thread, not once per fd.
    paths: PathIsDir,
}

impl<'a> Reader<'a> {
    fn new(links: &'a FdLinks) -> Reader<'a> {
        Reader {
            links,
            tally: Tally::default(),
            paths: PathIsDir::new(),
        }
    }

    /// Reads the links of `fds`; one closed meanwhile (or never open) is left out.
    fn read(&mut self, fds: impl IntoIterator<Item = i32>) -> Result<(), Refused> {
        let mut buf = [0u8; 4096];
        for fd in fds {
            let link = match self.links.read_link(fd, &mut buf) {
                Ok(link) => String::from_utf8_lossy(link),
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(Refused),
                Err(_) => continue,
            };
            let kind = kind_of(self.links, fd, &link, &mut self.paths);
            let t = &mut self.tally;
            t.open += 1;
            *t.by_kind.entry(kind).or_default() += 1;
            if kind == FdKind::Socket
                && let Some(inode) = link_inode(&link)
            {
                t.sockets.push(inode);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::ProcDir;

    /// Kinds and sockets, in an order that compares.
    fn seen(t: &Tally) -> (usize, Vec<(FdKind, usize)>, Vec<u64>) {
        let mut sockets = t.sockets.clone();
        sockets.sort_unstable();
        let kinds = t.by_kind.iter().map(|(k, n)| (*k, *n)).collect();
        (t.open, kinds, sockets)
    }

    #[test]
    fn a_table_with_holes_reads_like_its_listing() {
        // fds 0-2, then 7 and 300: a hole below the count and one fd far above it.
        let mut child = std::process::Command::new("bash")
            .args(["-c", "exec 7</dev/null 300<>/dev/null; exec sleep 30"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("bash runs");
        let pid = child.id() as i32;
        let dir = ProcDir::open(pid).expect("own child");
        let links = dir.fd_links().expect("own child");
        // Its table is still once bash has become sleep and sleep waits in its system call
        // (bounded: 5 s at most): the name changes before the exec closes the close-on-exec
        // fds (std's exec-error pipe among them). Other tests' fds it inherited may be there
        // too: whatever the table is, both ways read it.
        let (mut comm, mut syscall) = (Vec::new(), Vec::new());
        for _ in 0..500 {
            dir.read(c"comm", &mut comm).unwrap();
            dir.read(c"syscall", &mut syscall).unwrap();
            let waiting = [&b"35 "[..], b"230 "]
                .iter()
                .any(|nr| syscall.starts_with(nr));
            if comm == b"sleep\n" && waiting {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let numbers = links.numbers_from(0).unwrap();
        assert!(numbers.contains(&300) && numbers.starts_with(&[0, 1, 2]));
        let listed = seen(&tally(&links, false, 1).expect("readable"));
        assert_eq!(listed.0, numbers.len(), "{listed:?}");
        assert_eq!(seen(&tally(&links, counts_fds(), 1).unwrap()), listed);
        // Split among threads, the chunks add up to the same.
        for threads in [2, 3] {
            let mut t = read_shared(&links, 301, threads).unwrap();
            assert_eq!(seen(&t), listed, "{threads} threads");
            t.merge(Tally::default());
            assert_eq!(seen(&t), listed);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
