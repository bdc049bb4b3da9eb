//! What the library publishes for the `fdguard` command (`fdguard_core::published`): the block
//! itself, exported as `fdguard_published`, and its updates: at start (the report destination,
//! its format), wherever the report signal changes (`dumper::signal`), and in a fork child,
//! whose reports go to a path with its own pid.
#![allow(unsafe_code)]

use fdguard_core::config::{Config, Format, ReportDest, expand_report_path_with};
use fdguard_core::published::{PathWriter, Published, Signal};
use std::sync::OnceLock;

use crate::os;

/// The block the command reads (`fdguard_core::published::SYMBOL`).
// SAFETY: exported under a name no other library uses; it is only ever accessed through its
// atomic fields.
#[unsafe(no_mangle)]
pub static fdguard_published: Published = Published::new();

/// Where reports go, kept for a fork child's pid: the format, the template (`None`: stderr)
/// and the `%t` of this process's reports.
struct Destination {
    format: Format,
    template: Option<Vec<u8>>,
    timestamp: String,
}

static DESTINATION: OnceLock<Destination> = OnceLock::new();

/// At start: publishes where reports go (the template expanded for this pid, `%t` being
/// `timestamp`).
pub fn start(config: &Config, timestamp: String) {
    let d = DESTINATION.get_or_init(|| Destination {
        format: config.format,
        template: match &config.report {
            ReportDest::Stderr => None,
            ReportDest::Path(t) => Some(t.clone()),
        },
        timestamp,
    });
    publish(d, os::process::getpid());
}

fn publish(d: &Destination, pid: u32) {
    let expand = |emit: &mut dyn FnMut(&[u8])| {
        if let Some(t) = &d.template {
            expand_report_path_with(t, pid, &d.timestamp, emit);
        }
    };
    let write: Option<PathWriter> = d.template.is_some().then_some(&expand);
    fdguard_published.set_destination(d.format, write);
}

/// In a fork child (no allocation): its reports go to a path with its own pid.
pub fn after_fork() {
    if let Some(d) = DESTINATION.get() {
        publish(d, os::process::getpid());
    }
}

pub fn set_signal(s: Signal) {
    fdguard_published.set_signal(s);
}

/// Where reports go, as published (a fork child's own path once it has forked).
pub fn destination() -> fdguard_core::published::Destination {
    fdguard_published.destination()
}
