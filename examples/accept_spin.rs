//! Seed 003 as written there, in Rust with std::net: `loop { match listener.accept() { Ok(c) =>
//! spawn(handle(c)), Err(e) => log(e) } }`. When fds run out, `accept` fails with EMFILE while
//! the connection stays queued, and the loop logs the error as fast as it can.
//!
//! ```sh
//! cargo build --example accept_spin
//! target/debug/examples/accept_spin      # prints "port N", then one log line per event
//! prlimit --pid PID --nofile=N:N
//! ```
//! Under fdguard the loop sleeps in `accept` (5 ms doubling to 1 s) instead of spinning.
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// Waits until the client sends something or hangs up, then closes the connection.
fn handle_client(mut conn: TcpStream) {
    let fd = conn.as_raw_fd();
    let _ = conn.read(&mut [0u8; 1]);
    drop(conn);
    println!("closed fd {fd}");
}

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("port {}", listener.local_addr()?.port());
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                println!("accepted fd {}", conn.as_raw_fd());
                std::thread::spawn(move || handle_client(conn));
            }
            Err(e) => println!("accept: {e}"),
        }
    }
}
