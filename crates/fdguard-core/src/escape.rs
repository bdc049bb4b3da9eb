//! Text output that names what a process or the file system chose (a path, a socket's name, a
//! command line, a symbol) shows it escaped: a file named `evil\n==1== fdguard: end of
//! report\n\e[2J.txt` must neither forge a line of a report nor send escape sequences to the
//! terminal of whoever reads it (often root). JSON escapes by itself and SVG as XML: neither
//! uses this.
//!
//! The escaping is unambiguous (a backslash is doubled, so `\n` in the output is always a
//! newline in the name) and leaves any other valid UTF-8 as it is; names that were not UTF-8
//! reach here with U+FFFD in place of the invalid bytes.

use std::borrow::Cow;

/// Whether `c` is written escaped: C0 controls (newline, tab and ESC among them), DEL, C1
/// controls (U+0080..U+009F, which some terminals take as CSI and OSC), and the backslash
/// the escapes start with.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\'
}

/// `text` with every control character escaped: `\n`, `\t`, `\r`, ESC as `\x1b`, the other
/// C0 controls and DEL as `\xNN`, C1 controls as `\u{NN}` (a character, not a byte), and a
/// backslash as `\\`. Borrowed when there is nothing to escape (almost always).
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            '\0'..='\x1f' | '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Appends `line`, escaped, and a newline to `out`: how text output is written, one line at a
/// time, so that nothing a line shows can end it early, forge the next one, or reach the
/// terminal. fdguard's own words have nothing to escape.
pub fn push_line(out: &mut String, line: &str) {
    out.push_str(&escaped(line));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_is_left_as_it_is() {
        for text in [
            "",
            "/var/log/app/1.log",
            "tcp 127.0.0.1:80 -> 10.0.0.5:6379 CLOSE_WAIT",
            "/tmp/été/日本語 (deleted)",
            "\u{fffd}\u{fffd}.txt",
            "\u{a0}\u{ad}\u{2028}",
        ] {
            assert!(
                matches!(escaped(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }

    #[test]
    fn controls_and_the_backslash_are_escaped() {
        assert_eq!(escaped("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escaped("\x1b[2J\x1b]0;pwn\x07"), "\\x1b[2J\\x1b]0;pwn\\x07");
        assert_eq!(escaped("\0\x01\x1f\x7f"), "\\x00\\x01\\x1f\\x7f");
        assert_eq!(
            escaped("\u{80}\u{85}\u{9b}\u{9f}"),
            "\\u{80}\\u{85}\\u{9b}\\u{9f}"
        );
        assert_eq!(escaped("C:\\dir\\n"), "C:\\\\dir\\\\n");
        assert_eq!(escaped("été\x1b"), "été\\x1b");
    }

    #[test]
    fn the_hostile_name_stays_on_its_line() {
        let name = "evil\n==1== fdguard: end of report\n\x1b[2J\x1b]0;pwn\x07.txt";
        let mut out = String::new();
        push_line(&mut out, &format!("fd 3 {name}"));
        assert_eq!(
            out,
            "fd 3 evil\\n==1== fdguard: end of report\\n\\x1b[2J\\x1b]0;pwn\\x07.txt\n"
        );
        assert_eq!(out.lines().count(), 1);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'));
    }

    /// Every escaped text reads back as exactly one original: a backslash always starts an
    /// escape, and the escapes are told apart by their next character.
    #[test]
    fn escaping_is_unambiguous() {
        fn unescape(s: &str) -> String {
            let mut out = String::new();
            let mut it = s.chars();
            while let Some(c) = it.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match it.next().unwrap() {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '\\' => out.push('\\'),
                    'x' => {
                        let hex: String = it.by_ref().take(2).collect();
                        out.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
                    }
                    'u' => {
                        let hex: String = it.by_ref().skip(1).take_while(|c| *c != '}').collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                    }
                    other => panic!("no escape starts with {other:?}"),
                }
            }
            out
        }
        let all: String = (0u32..0x200).filter_map(char::from_u32).collect();
        for text in [all.as_str(), "\\n", "\\\n", "\\x1b\x1b", "a\\u{85}\u{85}"] {
            assert_eq!(unescape(&escaped(text)), text);
        }
    }
}
