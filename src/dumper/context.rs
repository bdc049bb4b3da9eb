//! What every report needs that is fixed when fdguard starts: the configuration, and the
//! command line (read at load: at EMFILE time `/proc/self/cmdline` cannot be opened).

use std::sync::OnceLock;

use fdguard_core::config::Config;

use crate::inspect;

static CONFIG: OnceLock<Config> = OnceLock::new();
static CMDLINE: OnceLock<Vec<String>> = OnceLock::new();

/// Keeps `config` (the first one given: attaching again keeps the first attach's) and reads
/// the command line.
pub fn init(config: Config) -> &'static Config {
    CMDLINE.get_or_init(inspect::cmdline);
    CONFIG.get_or_init(|| config)
}

pub fn config() -> Option<&'static Config> {
    CONFIG.get()
}

pub fn cmdline() -> Vec<String> {
    CMDLINE.get().cloned().unwrap_or_default()
}
