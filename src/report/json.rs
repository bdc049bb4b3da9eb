//! The JSON report: one object on one line, keys as documented in the README (schema 1).

use std::fmt::Write as _;

use super::{BadCloseNotice, Frame, Report, iso8601_utc};
use crate::origin::FdKind;

/// Appends `s` as a JSON string literal.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn opt_string(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.push_str("null"),
    }
}

fn opt_num(out: &mut String, n: Option<u64>) {
    match n {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

fn limit(out: &mut String, v: u64) {
    opt_num(out, (v != u64::MAX).then_some(v));
}

fn kind_counts(out: &mut String, counts: &[(FdKind, usize)]) {
    let named: Vec<(&str, usize)> = counts.iter().map(|(k, n)| (k.name(), *n)).collect();
    name_counts(out, &named);
}

/// An object of counts by name.
fn name_counts(out: &mut String, counts: &[(&str, usize)]) {
    out.push('{');
    for (i, (s, n)) in counts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, s);
        let _ = write!(out, ":{n}");
    }
    out.push('}');
}

fn frame(out: &mut String, f: &Frame) {
    let _ = write!(out, "{{\"addr\":\"{:#x}\",\"module\":", f.addr);
    opt_string(out, f.module.as_deref());
    out.push_str(",\"offset\":");
    match f.offset {
        Some(o) => {
            let _ = write!(out, "\"{o:#x}\"");
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"function\":");
    opt_string(out, f.function.as_deref());
    out.push_str(",\"file\":");
    opt_string(out, f.file.as_deref());
    out.push_str(",\"line\":");
    opt_num(out, f.line.map(u64::from));
    out.push('}');
}

fn frames(out: &mut String, frames: &[Frame]) {
    out.push('[');
    for (j, f) in frames.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        frame(out, f);
    }
    out.push(']');
}

/// A bad close as one line of JSON (`"event": "bad_close"`; reports have no `event` key).
pub fn render_bad_close_json(n: &BadCloseNotice) -> String {
    let mut o = format!(
        "{{\"fdguard\":1,\"pid\":{},\"event\":\"bad_close\",\"time\":",
        n.pid
    );
    string(&mut o, &iso8601_utc(n.unix_ms));
    o.push_str(",\"call\":");
    string(&mut o, n.call);
    let _ = write!(o, ",\"fd\":{},\"tid\":{},\"stack\":", n.fd, n.tid);
    frames(&mut o, &n.frames);
    o.push_str(",\"released_by\":");
    match &n.released_by {
        Some(f) => frames(&mut o, f),
        None => o.push_str("null"),
    }
    let _ = writeln!(o, ",\"not_shown\":{}}}", n.not_shown);
    o
}

/// The report as one line of JSON, newline-terminated.
pub fn render_json(r: &Report) -> String {
    let h = &r.header;
    let mut o = String::with_capacity(256 + r.rows.len() * 128);
    let _ = write!(o, "{{\"fdguard\":1,\"pid\":{},\"cmdline\":[", h.pid);
    for (i, a) in h.cmdline.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        string(&mut o, a);
    }
    o.push_str("],\"reason\":");
    string(&mut o, h.reason);
    o.push_str(",\"trigger_call\":");
    opt_string(&mut o, h.trigger_call);
    o.push_str(",\"trigger_errno\":");
    opt_string(&mut o, h.trigger_errno);
    o.push_str(",\"time\":");
    string(&mut o, &iso8601_utc(h.unix_ms));
    o.push_str(",\"limit\":{\"soft\":");
    limit(&mut o, h.soft);
    o.push_str(",\"hard\":");
    limit(&mut o, h.hard);
    let _ = write!(
        o,
        "}},\"open\":{},\"untracked\":{},\"suppressed\":{},\"missed_closes\":{},\"skipped\":{},\
         \"bad_closes\":{},\"by_kind\":",
        r.open(),
        r.untracked(),
        h.suppressed,
        h.missed_closes,
        h.skipped,
        h.bad_closes
    );
    kind_counts(&mut o, &r.by_kind());
    o.push_str(",\"tcp_states\":");
    name_counts(&mut o, &r.tcp_states());
    let _ = write!(
        o,
        ",\"emfile\":{{\"accept_failures\":{},\"paused_ms\":{},\"shed\":{}}},\"fds\":[",
        h.emfile.accept_failures, h.emfile.paused_ms, h.emfile.shed
    );
    let group_ids = r.group_ids();
    for (i, row) in r.rows.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let _ = write!(o, "{{\"fd\":{},\"kind\":", row.fd);
        string(&mut o, row.kind.name());
        o.push_str(",\"desc\":");
        string(&mut o, &row.desc);
        o.push_str(",\"call\":");
        string(&mut o, row.call.name());
        o.push_str(",\"age_ms\":");
        opt_num(&mut o, row.age_ms);
        o.push_str(",\"tid\":");
        opt_num(&mut o, row.tid.map(u64::from));
        o.push_str(",\"stack\":");
        opt_num(
            &mut o,
            row.stack
                .and_then(|s| group_ids.get(&s))
                .map(|id| *id as u64),
        );
        o.push('}');
    }
    o.push_str("],\"stacks\":[");
    for (i, g) in r.stacks.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let _ = write!(o, "{{\"id\":{},\"count\":{},\"by_kind\":", g.id, g.count);
        kind_counts(&mut o, &g.by_kind);
        o.push_str(",\"tcp_states\":");
        name_counts(&mut o, &g.tcp_states);
        let _ = write!(
            o,
            ",\"oldest_ms\":{},\"newest_ms\":{},\"frames\":",
            g.oldest_ms, g.newest_ms
        );
        frames(&mut o, &g.frames);
        o.push('}');
    }
    o.push_str("]}\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_strings() {
        let mut s = String::new();
        string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }
}
