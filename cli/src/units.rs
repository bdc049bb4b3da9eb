//! Numbers and durations as people read them: `1,019`, `99%`, `1h10m`.

/// `1019` → `1,019`.
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A signed count: `+14`, `-3`, `0`.
pub fn signed(n: i64) -> String {
    match n {
        0 => "0".to_string(),
        n if n > 0 => format!("+{}", count(n as usize)),
        n => format!("-{}", count(n.unsigned_abs() as usize)),
    }
}

/// `part` of `whole`, rounded down, as `99%`.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_string();
    }
    format!("{}%", part.saturating_mul(100) / whole)
}

/// `45s`, `3m20s`, `1h10m`, `2d4h`: two units at most.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".to_string();
    }
    if secs < 9.95 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1019), "1,019");
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(signed(-1200), "-1,200");
        assert_eq!(signed(14), "+14");
        assert_eq!(percent(1019, 1024), "99%");
        assert_eq!(duration(4200.0), "1h10m");
        assert_eq!(duration(200.0), "3m20s");
        assert_eq!(duration(9.96), "10s");
        assert_eq!(duration(0.34), "0.3s");
        assert_eq!(duration(200_000.0), "2d7h");
    }
}
