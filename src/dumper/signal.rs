//! The report signal (`FDGUARD_SIGNAL`): fdguard's handler on one signal the program leaves
//! alone, which only files a request (`trigger`); and what happens when the program takes that
//! signal for itself.
//!
//! # Whose signal
//! fdguard installs its handler only on a signal whose disposition is the default, and keeps
//! what the program believes that disposition is (`VIEW`): the default, as the program left it
//! or set it again. The program's own `sigaction`, `signal`, `sigset`, ... on that signal
//! (`hooks::signals`) come through `program_call`:
//! - a query sees `VIEW`, never fdguard's handler;
//! - setting a handler, or `SIG_IGN`, is the program's to do: the call runs as it would without
//!   fdguard, returns what it would have returned (the previous disposition from `VIEW`), and
//!   fdguard moves its handler to a free real-time signal (`SIGRTMAX` downwards), saying so once
//!   on stderr and publishing it (`published`), so that `fdguard report` follows; with none
//!   free (a Go runtime takes every signal), fdguard takes no more requests and says so;
//! - setting `SIG_DFL` leaves the signal to fdguard: `VIEW` becomes what the program set.
//!
//! So the program's handlers run for its signals, `kill -USR2` keeps asking for a report while
//! the program leaves SIGUSR2 alone, and nothing the program can observe changes.
//!
//! # Requests
//! A plain signal asks for a report where reports go. One sent by `fdguard report` carries a
//! value (`fdguard_core::request`) naming a reply file and a format: it is queued (`REPLIES`)
//! and served as its own report. One sent by a report child as it ends (`request::WAKE`)
//! serves the requests that found every report child at work (`child::wake_later`).
//!
//! Everything here may run in a signal handler (the program may call `sigaction` from one):
//! atomics, libc's `sigaction`, and `write` of a message built on the stack.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

use fdguard_core::decimal::Decimal;
use fdguard_core::published::Signal;
use fdguard_core::request::{self, Request};
use fdguard_core::signals::{self, SignalName};

use crate::child;
use crate::guard::ErrnoGuard;
use crate::os;
use crate::published;
use crate::trigger::{self, Reason};

/// The signal fdguard's handler is on; 0 for none, `MOVING` while a program's call on it runs.
static OWNED: AtomicI32 = AtomicI32::new(0);
const MOVING: i32 = -1;

/// Requests from `fdguard report` waiting to be served (their values; 0 for a free slot).
static REPLIES: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

extern "C" fn on_signal(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let value = os::signal::queued_value(info);
    if value == Some(request::WAKE) {
        trigger::request_bits(child::take_pending());
        return;
    }
    let Some(request) = value.and_then(Request::from_value) else {
        trigger::request(Reason::Signal);
        return;
    };
    // The command asks again until its reply comes: one of each is kept. With eight waiting,
    // this one is left to be asked again.
    wait_again(request);
    trigger::request(Reason::Reply);
}

/// Keeps `request` waiting for a report child (once).
pub fn wait_again(request: Request) {
    let value = request.value();
    if REPLIES
        .iter()
        .any(|slot| slot.load(Ordering::Acquire) == value)
    {
        return;
    }
    let _ = REPLIES.iter().any(|slot| {
        slot.compare_exchange(0, value, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
}

/// Whether requests from `fdguard report` wait.
pub fn replies_waiting() -> bool {
    REPLIES.iter().any(|slot| slot.load(Ordering::Acquire) != 0)
}

/// The requests from `fdguard report` waiting to be served, taken.
pub fn take_replies() -> impl Iterator<Item = Request> {
    REPLIES
        .iter()
        .filter_map(|slot| Request::from_value(slot.swap(0, Ordering::AcqRel)))
}

/// `VIEW`: the disposition the program believes fdguard's signal has, as the words of a
/// `sigaction`, with a sequence count (odd while it is rewritten) so that a reader on another
/// thread never takes half of an old one and half of a new one. One writer at a time: the one
/// that set `OWNED` to `MOVING` (or starting, before any program call can see `OWNED`).
struct View {
    seq: AtomicU32,
    words: [AtomicU64; WORDS],
}

const WORDS: usize = size_of::<libc::sigaction>().div_ceil(8);

static VIEW: View = View {
    seq: AtomicU32::new(0),
    words: [const { AtomicU64::new(0) }; WORDS],
};

impl View {
    fn set(&self, sa: &libc::sigaction) {
        let mut words = [0u64; WORDS];
        // SAFETY: `words` has room for a whole sigaction (WORDS rounds its size up), and a
        // sigaction is plain data, copied byte for byte.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (sa as *const libc::sigaction).cast::<u8>(),
                words.as_mut_ptr().cast::<u8>(),
                size_of::<libc::sigaction>(),
            )
        };
        self.seq.fetch_add(1, Ordering::AcqRel);
        for (w, v) in self.words.iter().zip(words) {
            w.store(v, Ordering::Relaxed);
        }
        self.seq.fetch_add(1, Ordering::AcqRel);
    }

    fn get(&self) -> libc::sigaction {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            let words: [u64; WORDS] =
                std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
            if before.is_multiple_of(2) && self.seq.load(Ordering::Acquire) == before {
                let mut sa = std::mem::MaybeUninit::<libc::sigaction>::uninit();
                // SAFETY: the words hold the bytes of a sigaction written by `set` (or zeroes,
                // a valid default action), and every bit pattern of its fields is valid.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        words.as_ptr().cast::<u8>(),
                        sa.as_mut_ptr().cast::<u8>(),
                        size_of::<libc::sigaction>(),
                    );
                    return sa.assume_init();
                }
            }
            std::hint::spin_loop();
        }
    }
}

/// fdguard's handler is on `sig` (0: on none); report children wake the program with it.
fn set_owned(sig: i32) {
    OWNED.store(sig, Ordering::Release);
    child::set_wake_signal(sig);
}

/// True if fdguard's handler is on `sig` (one load: the hooks' first question).
#[inline]
pub fn owns(sig: i32) -> bool {
    sig > 0 && OWNED.load(Ordering::Acquire) == sig
}

/// Whether `sig`'s disposition is the default, so that fdguard may take it.
fn is_free(sig: i32) -> Option<libc::sigaction> {
    os::signal::disposition(sig).filter(|sa| sa.sa_sigaction == libc::SIG_DFL)
}

/// Installs the handler on the first free signal of `wanted` then `SIGRTMAX` downwards (never
/// `skip`), publishes it, and returns it; `None` if every one has a disposition of the
/// program's. Called by the one writer (see `View`).
fn take_free(wanted: Option<i32>, skip: i32) -> Option<i32> {
    let rt = (libc::SIGRTMIN()..=libc::SIGRTMAX()).rev();
    for sig in wanted.into_iter().chain(rt).filter(|s| *s != skip) {
        let Some(before) = is_free(sig) else {
            continue;
        };
        VIEW.set(&before);
        if os::signal::set_disposition(sig, &os::signal::info_action(on_signal)).is_ok() {
            set_owned(sig);
            published::set_signal(Signal::Answers(sig));
            return Some(sig);
        }
    }
    set_owned(0);
    published::set_signal(Signal::NoneFree);
    None
}

/// What starting (preloaded, or attached) made of the configured signal: the signal taken and,
/// when it is not the one configured, the line that says so.
pub fn take(configured: Option<i32>) -> Option<String> {
    let Some(wanted) = configured else {
        published::set_signal(Signal::NoneConfigured);
        return None;
    };
    let got = take_free(Some(wanted), 0);
    (got != Some(wanted)).then(|| {
        let mut line = Line::new();
        line.push(b"fdguard: ").signal(wanted);
        line.push(b" has a handler of the program's or is ignored: ");
        line.moved_to(got);
        line.as_str().to_string()
    })
}

/// A line of fdguard's built on the stack (no allocation: it may be said from a signal
/// handler).
struct Line {
    bytes: [u8; 512],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Self {
            bytes: [0; 512],
            len: 0,
        }
    }

    /// Appends `s`, as much as fits with room left for the newline `say` ends the line with.
    fn push(&mut self, s: &[u8]) -> &mut Self {
        let n = s.len().min(self.bytes.len() - 1 - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self
    }

    fn number(&mut self, n: u32) -> &mut Self {
        self.push(Decimal::of(u64::from(n)).as_bytes())
    }

    fn signal(&mut self, sig: i32) -> &mut Self {
        let name: SignalName = signals::name(sig);
        self.push(name.as_str().as_bytes())
    }

    /// Where report requests go now.
    fn moved_to(&mut self, sig: Option<i32>) -> &mut Self {
        match sig {
            Some(s) => self
                .push(b"report requests use ")
                .signal(s)
                .push(b" instead (`fdguard report ")
                .number(os::process::getpid())
                .push(b"` follows it)"),
            None => self.push(
                b"no signal is left that the program does not handle (a Go runtime takes them \
                  all), so fdguard takes no report requests (`fdguard report` says so); \
                  threshold, EMFILE and exit reports still come",
            ),
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("fdguard: report signal moved")
    }

    fn say(&mut self) {
        self.bytes[self.len] = b'\n';
        let _ = os::fd::write_all(2, &self.bytes[..=self.len]);
    }
}

/// Said once each: the signal moved, and no signal left.
static SAID_MOVED: AtomicBool = AtomicBool::new(false);
static SAID_NONE: AtomicBool = AtomicBool::new(false);

/// The program's own call on fdguard's signal `sig` (see the module's documentation): `real` is
/// libc's function with the program's arguments, `sets` whether it changes the disposition, and
/// `fix` replaces, in its result, a disposition that shows fdguard's handler (`handler`) with
/// what the program would have seen without fdguard (`VIEW` before the call).
pub fn program_call<R>(
    sig: i32,
    sets: bool,
    real: impl FnOnce() -> R,
    fix: impl FnOnce(&mut R, &libc::sigaction),
) -> R {
    if !sets {
        let view = VIEW.get();
        let mut r = real();
        fix(&mut r, &view);
        return r;
    }
    if OWNED
        .compare_exchange(sig, MOVING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Another thread's call on it is under way; this one goes through as it is.
        return real();
    }
    // Report children stop waking the program with it before the program may take it.
    child::set_wake_signal(0);
    let view = VIEW.get();
    let mut r = real();
    let _errno = ErrnoGuard::save();
    let now = os::signal::disposition(sig);
    match now {
        // Unchanged (the call failed) or fdguard's again: the signal stays fdguard's.
        Some(sa) if sa.sa_sigaction == handler() => set_owned(sig),
        // The program set the default: fdguard's handler goes back, the program's view is it.
        Some(sa) if sa.sa_sigaction == libc::SIG_DFL => {
            VIEW.set(&sa);
            let _ = os::signal::set_disposition(sig, &os::signal::info_action(on_signal));
            set_owned(sig);
        }
        // A handler or SIG_IGN of the program's (or the disposition could not be read).
        _ => moved_away(sig),
    }
    fix(&mut r, &view);
    r
}

/// The program took `sig`: fdguard moves to a free signal, saying so once.
fn moved_away(sig: i32) {
    let got = take_free(None, sig);
    let said = match got {
        Some(_) => &SAID_MOVED,
        None => &SAID_NONE,
    };
    if !said.swap(true, Ordering::Relaxed) {
        let mut line = Line::new();
        line.push(b"fdguard: the program installed its own handler for ")
            .signal(sig)
            .push(b": ")
            .moved_to(got)
            .say();
    }
}

/// `fdguard detach`: the report signal gets back the disposition the program believes it has.
pub fn remove_handler() {
    child::set_wake_signal(0);
    let sig = OWNED.swap(0, Ordering::AcqRel);
    if sig > 0 {
        let _ = os::signal::set_disposition(sig, &VIEW.get());
    }
    published::set_signal(Signal::NotStarted);
}

/// Attaching again after a detach: the handler back, with the first attach's configuration.
pub fn restart() -> Option<String> {
    take(super::context::config().and_then(|c| c.signal))
}

/// The address of fdguard's handler: what a program's call must never be shown.
pub fn handler() -> usize {
    on_signal as *const () as usize
}
