//! fdguard's integration tests, one module per concern, compiled into one test binary.
mod common;

mod accept_guard;
mod calls;
mod cli_attach;
mod cli_inspect;
mod cli_report;
mod cli_run;
mod config;
mod core;
mod failures;
mod hot_path;
mod incidents;
mod modes;
mod process;
mod programs;
mod python;
mod signals;
mod stacks;
mod triggers;
mod workload;
