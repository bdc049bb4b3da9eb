//! Report files as the user names them: the last fdguard JSON document in a file (a report or
//! an `inspect --json` snapshot), read with `fdguard_core::read`.

use std::path::Path;

use fdguard_core::read::{Document, parse_documents};

use crate::fail::Failure;

/// The last report (or snapshot) in the file at `path`.
pub fn load_last(path: &Path) -> Result<Document, Failure> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::bad_input(format!("cannot read {shown}: {e}")))?;
    let mut docs =
        parse_documents(&text).map_err(|e| Failure::bad_input(e.describe(&shown.to_string())))?;
    let n = docs.len();
    let Some(last) = docs.pop() else {
        return Err(Failure::bad_input(format!(
            "{shown} holds no fdguard report"
        )));
    };
    if n > 1 {
        eprintln!(
            "fdguard: {shown} holds {n} reports; using the last ({}, {})",
            or_unknown(last.reason()),
            or_unknown(last.time())
        );
    }
    Ok(last)
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "?" } else { s }
}
