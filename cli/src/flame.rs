//! `fdguard flamegraph REPORT.json`: who holds the fds, as a flame graph. Each creation stack
//! is a tower, outermost frame at the bottom, as wide as the fds it created; fds without a
//! stack stand on their own (`[untracked]`, `[inherited]`). A snapshot of `inspect` (no stacks)
//! is drawn by kind and place instead.

use std::io::Write;
use std::path::Path;

use inferno::flamegraph::{self, Options};

use fdguard_core::escape::escaped;
use fdguard_core::read::Document;

use crate::fail::{Failure, Outcome};
use crate::reports::load_last;

/// A frame name that cannot break the folded format (`;` separates frames, a newline stacks)
/// nor reach a terminal as control characters (`fdguard_core::escape`).
fn clean(name: &str) -> String {
    escaped(name).replace(';', ":")
}

/// Folded stacks: `outermost;...;innermost COUNT`, one line per stack.
pub fn folded(doc: &Document) -> Vec<String> {
    let mut lines: Vec<String> = doc
        .stacks()
        .iter()
        .filter(|s| s.count > 0)
        .map(|s| {
            let frames: Vec<String> = s.frames.iter().rev().map(|f| clean(&f.name())).collect();
            let frames = if frames.is_empty() {
                "[empty stack]".to_string()
            } else {
                frames.join(";")
            };
            format!("{frames} {}", s.count)
        })
        .collect();
    // fds without a stack, by how they came (inherited, untracked, ...) and kind.
    let mut loose: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for (call, kind) in doc.loose_fds() {
        let how = match call {
            "inherited" | "untracked" => format!("[{call}]"),
            other => format!("[{other}, no stack]"),
        };
        *loose.entry((how, kind.name().to_string())).or_default() += 1;
    }
    if doc.stacks().is_empty() && !doc.groups().is_empty() {
        // A snapshot: kind, then where the fds point.
        lines.extend(doc.groups().iter().map(|g| {
            format!(
                "{};{} {} {}",
                clean(g.kind.name()),
                clean(&g.by),
                clean(&g.key),
                g.count
            )
        }));
        return lines;
    }
    lines.extend(
        loose
            .into_iter()
            .map(|((how, kind), n)| format!("{how};{} {n}", clean(&kind))),
    );
    lines
}

pub fn run(path: &Path, as_folded: bool, title: Option<String>) -> Outcome {
    let doc = load_last(path)?;
    let lines = folded(&doc);
    let mut out = std::io::stdout().lock();
    let written = if as_folded {
        lines.iter().try_for_each(|l| writeln!(out, "{l}"))
    } else {
        if lines.is_empty() {
            return Err(Failure::bad_input(format!(
                "{} lists no fds: nothing to draw",
                path.display()
            )));
        }
        let mut opts = Options::default();
        opts.title =
            title.unwrap_or_else(|| format!("fds held by {}: {} open", doc.who(), doc.open()));
        opts.count_name = "fds".to_string();
        opts.name_type = "Frame:".to_string();
        flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut out)
    };
    written.map_err(|e| Failure::failed(format!("cannot write the flame graph: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdguard_core::read::parse_documents;

    #[test]
    fn stacks_fold_outermost_first_and_loose_fds_stand_apart() {
        let json = r#"{"fdguard":1,"pid":1,"open":4,"fds":[
            {"fd":0,"kind":"pty","desc":"/dev/pts/0","call":"inherited","stack":null},
            {"fd":3,"kind":"file","desc":"/etc/hosts","call":"fopen","stack":0},
            {"fd":4,"kind":"file","desc":"/etc/hosts","call":"fopen","stack":0},
            {"fd":5,"kind":"socket","desc":"tcp","call":"untracked","stack":null}],
            "stacks":[{"id":0,"count":2,"frames":[
              {"function":"load;x","module":"/a","offset":"0x1"},
              {"function":null,"module":"/usr/bin/app","offset":"0x2"},
              {"function":"main","module":"/a","offset":"0x3"}]}]}"#;
        let doc = parse_documents(json).unwrap().pop().unwrap();
        assert_eq!(
            folded(&doc),
            vec![
                "main;app+0x2;load:x 2",
                "[inherited];pty 1",
                "[untracked];socket 1"
            ]
        );
    }
}
