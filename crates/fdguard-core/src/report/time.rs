//! UTC timestamps without a time zone database.

/// `2026-11-22T03:04:05.123Z` for milliseconds since the epoch.
pub fn iso8601_utc(unix_ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_ms / 1000);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        unix_ms % 1000
    )
}

/// `20261122T030405Z`, for file names (`%t` in `FDGUARD_REPORT`).
pub fn compact_utc(unix_s: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_s);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// (year, month, day, hour, minute, second) of a Unix time (days-to-civil, proleptic Gregorian).
fn civil(unix_s: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = unix_s / 86_400;
    let secs = unix_s % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601_utc(1_795_316_645_000), "2026-11-22T03:04:05.000Z");
        assert_eq!(compact_utc(1_795_316_645), "20261122T030405Z");
    }
}
