//! fdguard's shared core: what the library (`libfdguard.so`), the `fdguard` command and any
//! other recorder of fds mean the same way. Pure: it reads files only where a function says so
//! (`program`, `elf`), and never touches a process.
//!
//! - `accept_lines`: what the accept guard tells the operator on stderr;
//! - `config`: the `FDGUARD_*` variables, their defaults and parser; `signals`: signal names;
//!   `decimal`: numbers as text without allocating;
//! - `kind`, `call`: what an fd is (the kind table) and which call made it;
//! - `sockdesc`, `fdinfo`: how a socket is described, what `/proc/PID/fdinfo` says;
//! - `place`: where an fd points (a directory, a path, a peer, a listener's address);
//! - `procstat`: when a process started (`/proc/PID/stat`);
//! - `program`, `elf`: what kind of program an executable is (static, Go, JVM, CPython, node);
//! - `report`: the report model (schema 1), built from observed fds, as JSON or text;
//! - `snapshot`: `inspect`'s snapshot (schema 1); `read`: reading either back; `schema`: the
//!   schema number;
//! - `published`, `request`: what the library publishes for the command, and how the command
//!   asks it for a report;
//! - `escape`: what a process or the file system named, made safe to print as text.

pub mod accept_lines;
pub mod call;
pub mod config;
pub mod decimal;
pub mod elf;
pub mod escape;
pub mod fdinfo;
pub mod kind;
mod named;
pub mod place;
pub mod procstat;
pub mod program;
pub mod published;
pub mod read;
pub mod report;
pub mod request;
pub mod schema;
pub mod signals;
pub mod snapshot;
pub mod sockdesc;
