//! Creation stacks to frames, each distinct stack once per report, starting from what earlier
//! report children resolved (`symcache`, shared with them) and handing back what this one adds.

use std::collections::HashMap;

use fdguard_core::report::Frame;

use crate::stack;
use crate::symbolize::Symbolizer;
use crate::symcache;
use crate::table::StackId;

/// Resolves each distinct stack once: starting from what earlier reports resolved (the shared
/// `symcache`), and remembering what this one adds.
pub struct FrameCache {
    symbolizer: Symbolizer,
    frames: HashMap<StackId, Vec<Frame>>,
    fresh: Vec<(StackId, Vec<Frame>)>,
}

impl FrameCache {
    pub fn new(symbolizer: Symbolizer) -> Self {
        Self {
            symbolizer,
            frames: symcache::load(),
            fresh: Vec::new(),
        }
    }

    pub fn get(&mut self, s: StackId) -> &[Frame] {
        let sym = &self.symbolizer;
        let fresh = &mut self.fresh;
        self.frames.entry(s).or_insert_with(|| {
            let frames = sym.frames(&stack::frames(s));
            fresh.push((s, frames.clone()));
            frames
        })
    }

    pub fn of(&mut self, s: Option<StackId>) -> Vec<Frame> {
        s.map(|s| self.get(s).to_vec()).unwrap_or_default()
    }

    /// Stores what this report resolved for the report children after it.
    pub fn share(&self) {
        symcache::append(&self.fresh);
    }
}
