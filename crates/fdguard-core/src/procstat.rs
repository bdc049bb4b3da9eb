//! What `/proc/PID/stat` says that fdguard needs: when the process started.

/// The process's start time, in clock ticks since boot (field 22 of `/proc/PID/stat`). The
/// command name (field 2) is in parentheses and may hold spaces and `)`, so fields are counted
/// after its last `)`.
pub fn start_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (the state) is the first after the name: field 22 is the 20th.
    after_name.split_ascii_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_after_a_hostile_name() {
        let tail = "S 1 2 3 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 98765 1000 200";
        assert_eq!(start_ticks(&format!("42 (a) b) c) {tail}")), Some(98765));
        assert_eq!(start_ticks(&format!("42 (sh) {tail}")), Some(98765));
        assert_eq!(start_ticks("42 (sh) S 1 2"), None);
        assert_eq!(start_ticks("garbage"), None);
    }

    #[test]
    fn this_process_started_before_now() {
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        let init = std::fs::read_to_string("/proc/1/stat").unwrap();
        assert!(start_ticks(&init).unwrap() <= start_ticks(&own).unwrap());
    }
}
