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
//! table is read on several threads, each a share of the numbers.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;

use fdguard_core::fdinfo::link_inode;
use fdguard_core::kind::FdKind;

use crate::fds::{PathIsDir, kind_of};
use crate::os::FdLinks;

/// Fewest fd numbers worth a thread of their own (a thread costs about what 30 links do).
const PER_THREAD: usize = 2048;

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
        return Ok(Tally::default());
    }
    let count = count.unwrap_or(0);
    let end = i32::try_from(count).unwrap_or(i32::MAX);
    let parts = threads.min(count / PER_THREAD).max(1);
    let mut tally = read_range(links, 0..end, parts)?;
    if tally.open < count || !counts {
        // Fds at or above the count (or closed since it was taken): the listing has them.
        let rest = links.numbers_from(end).unwrap_or_default();
        tally.merge(read_fds(links, rest)?);
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

/// Reads fds `range` on `parts` threads, a share of the numbers each.
fn read_range(links: &FdLinks, range: Range<i32>, parts: usize) -> Result<Tally, Refused> {
    let len = range.len();
    if parts <= 1 {
        return read_fds(links, range);
    }
    let share = |i: usize| range.start + (len * i / parts) as i32;
    std::thread::scope(|s| {
        let others: Vec<_> = (1..parts)
            .map(|i| {
                s.spawn(move || {
                    let own = links.reopen();
                    read_fds(own.as_ref().unwrap_or(links), share(i)..share(i + 1))
                })
            })
            .collect();
        let mut tally = read_fds(links, share(0)..share(1));
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

/// Reads the links of `fds`; one closed meanwhile (or never open) is left out.
fn read_fds(links: &FdLinks, fds: impl IntoIterator<Item = i32>) -> Result<Tally, Refused> {
    let mut tally = Tally::default();
    // Per thread: one path's kind is asked once per thread, not once per fd.
    let mut paths = PathIsDir::new();
    let mut buf = [0u8; 4096];
    for fd in fds {
        let link = match links.read_link(fd, &mut buf) {
            Ok(link) => String::from_utf8_lossy(link),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(Refused),
            Err(_) => continue,
        };
        let kind = kind_of(links, fd, &link, &mut paths);
        tally.open += 1;
        *tally.by_kind.entry(kind).or_default() += 1;
        if kind == FdKind::Socket
            && let Some(inode) = link_inode(&link)
        {
            tally.sockets.push(inode);
        }
    }
    Ok(tally)
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
        // Its table is still once bash has become sleep (bounded: 5 s at most). Other tests'
        // fds it inherited may be there too: whatever the table is, both ways read it.
        let mut comm = Vec::new();
        for _ in 0..500 {
            dir.read(c"comm", &mut comm).unwrap();
            if comm == b"sleep\n" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let numbers = links.numbers_from(0).unwrap();
        assert!(numbers.contains(&300) && numbers.starts_with(&[0, 1, 2]));
        let listed = seen(&tally(&links, false, 1).expect("readable"));
        assert_eq!(listed.0, numbers.len(), "{listed:?}");
        assert_eq!(seen(&tally(&links, counts_fds(), 1).unwrap()), listed);
        // Split among threads, the shares add up to the same.
        for parts in [2, 3, 7] {
            let mut t = read_range(&links, 0..301, parts).unwrap();
            assert_eq!(seen(&t), listed, "{parts} parts");
            t.merge(Tally::default());
            assert_eq!(seen(&t), listed);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
