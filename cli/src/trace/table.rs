//! The fd table of one traced fd table of the kernel's (a process, or the processes and threads
//! that share one with `CLONE_FILES`): who made each open fd, as the library's table keeps it.
//! The fds open when the program started are `inherited`; a `fork` child starts with a copy;
//! exec drops the close-on-exec fds; an fd the kernel has but the table does not is listed as
//! `untracked` at report time.

use std::collections::BTreeMap;
use std::time::Instant;

use fdguard_core::call::Call;

use super::calls::Change;

/// The name of a creation stack: interned by the tracer when stacks are captured (the slot
/// the stack capture fills at the entry stop; `None` until it does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StackKey(pub u32);

/// What the table knows of one open fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub call: Call,
    pub cloexec: bool,
    /// The thread that made it (0 for inherited fds).
    pub tid: u32,
    pub created: Instant,
    pub stack: Option<StackKey>,
}

#[derive(Clone, Debug, Default)]
pub struct Table {
    fds: BTreeMap<i32, Entry>,
    /// Creations that found their number still in the table: a close the tracer did not see.
    pub missed_closes: u64,
}

impl Table {
    /// The table of a program that starts with `fds` open, at `started`.
    pub fn inherited(fds: impl IntoIterator<Item = (i32, bool)>, started: Instant) -> Table {
        let fds = fds
            .into_iter()
            .map(|(fd, cloexec)| {
                let entry = Entry {
                    call: Call::Inherited,
                    cloexec,
                    tid: 0,
                    created: started,
                    stack: None,
                };
                (fd, entry)
            })
            .collect();
        Table {
            fds,
            missed_closes: 0,
        }
    }

    /// How many fds are open.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn get(&self, fd: i32) -> Option<&Entry> {
        self.fds.get(&fd)
    }

    /// A new fd. A number still in the table is either `dup2`'s target (closed by the call
    /// itself) or a close the tracer did not see.
    pub fn insert(&mut self, fd: i32, entry: Entry) {
        let replaced = self.fds.insert(fd, entry);
        if replaced.is_some() && !matches!(entry.call, Call::Dup2 | Call::Dup3) {
            self.missed_closes += 1;
        }
    }

    /// Applies a change made at a call's entry.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Close(fd) => {
                self.fds.remove(&fd);
            }
            Change::CloseRange {
                first,
                last,
                cloexec_only,
                ..
            } if first <= last => {
                if cloexec_only {
                    for e in self.fds.range_mut(first..=last) {
                        e.1.cloexec = true;
                    }
                } else {
                    let mut from_first = self.fds.split_off(&first);
                    if let Some(next) = last.checked_add(1) {
                        self.fds.extend(from_first.split_off(&next));
                    }
                }
            }
            // Which table a task uses is the tracer's to change: this one is as it was.
            Change::CloseRange { .. } | Change::Unshare => {}
            Change::SetCloexec { fd, on } => {
                if let Some(e) = self.fds.get_mut(&fd) {
                    e.cloexec = on;
                }
            }
        }
    }

    /// The table after `execve`: the kernel closes the close-on-exec fds.
    pub fn exec(&self) -> Table {
        Table {
            fds: self
                .fds
                .iter()
                .filter(|(_, e)| !e.cloexec)
                .map(|(fd, e)| (*fd, *e))
                .collect(),
            missed_closes: self.missed_closes,
        }
    }

    #[cfg(test)]
    fn numbers(&self) -> Vec<i32> {
        self.fds.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(call: Call, cloexec: bool) -> Entry {
        Entry {
            call,
            cloexec,
            tid: 7,
            created: Instant::now(),
            stack: None,
        }
    }

    fn table() -> Table {
        let mut t = Table::inherited([(0, false), (1, false), (2, false)], Instant::now());
        for fd in 3..10 {
            t.insert(fd, made(Call::Openat, fd % 2 == 0));
        }
        t
    }

    #[test]
    fn inherited_fds_and_closes() {
        let mut t = table();
        assert_eq!(t.get(1).unwrap().call, Call::Inherited);
        t.apply(Change::Close(4));
        t.apply(Change::Close(40));
        assert_eq!(t.numbers(), [0, 1, 2, 3, 5, 6, 7, 8, 9]);
        t.insert(5, made(Call::Socket, false));
        assert_eq!((t.get(5).unwrap().call, t.missed_closes), (Call::Socket, 1));
        t.insert(6, made(Call::Dup2, false));
        assert_eq!(t.missed_closes, 1, "dup2 closes its target itself");
    }

    #[test]
    fn close_range_closes_or_marks() {
        let mut t = table();
        t.apply(Change::CloseRange {
            first: 5,
            last: 7,
            cloexec_only: false,
            unshare: false,
        });
        assert_eq!(t.numbers(), [0, 1, 2, 3, 4, 8, 9]);
        t.apply(Change::CloseRange {
            first: 3,
            last: i32::MAX,
            cloexec_only: true,
            unshare: false,
        });
        assert!(t.get(3).unwrap().cloexec && t.get(9).unwrap().cloexec);
        assert!(!t.get(2).unwrap().cloexec);
        t.apply(Change::CloseRange {
            first: 4,
            last: i32::MAX,
            cloexec_only: false,
            unshare: false,
        });
        assert_eq!(t.numbers(), [0, 1, 2, 3]);
        t.apply(Change::CloseRange {
            first: 9,
            last: 2,
            cloexec_only: false,
            unshare: false,
        });
        assert_eq!(t.numbers(), [0, 1, 2, 3]);
    }

    #[test]
    fn exec_drops_close_on_exec_fds() {
        let mut t = table();
        t.apply(Change::SetCloexec { fd: 3, on: true });
        t.apply(Change::SetCloexec { fd: 4, on: false });
        assert_eq!(t.exec().numbers(), [0, 1, 2, 4, 5, 7, 9]);
    }
}
