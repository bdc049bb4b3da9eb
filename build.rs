//! Links `libfdguard.so` with `-z nodelete`: once loaded, it is never unmapped. A JVM's attach
//! listener closes an agent library whose `Agent_OnAttach` refused (`src/attach/jvm.rs`), and
//! a library that may have installed a signal handler, started a thread or patched GOT entries
//! must not vanish under them; `dlclose` then only drops a reference.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
