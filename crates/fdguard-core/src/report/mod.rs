//! The report: what is open, what each fd is, and which code holds them. One set of types for
//! schema 1 (`model`), written by whoever records fds (the library, in a copy of the process)
//! and read by the command (`diff`, `flamegraph`, `report`), in JSON (serde) or as text
//! (`text`).
//!
//! A recorder fills a `Report` with the facts it has and hands its fds to `Report::fill`
//! (`build`), which groups them by creation stack and counts them; nothing here touches the OS.

mod build;
mod hex;
mod model;
mod suppress;
pub mod text;
mod time;

pub use build::Observed;
pub use model::{
    BadCloseNotice, EmfileStats, FdRow, Frame, Limit, Report, RuntimeInfo, SharedPlace, Stack,
    Word, who,
};
pub use suppress::is_suppressed;
pub use time::{compact_utc, iso8601_utc};
