//! The creation stacks of a traced program, each distinct one kept once (a server makes its
//! fds from a handful of places) under a `StackKey`, and named once, when a report first lists
//! it: naming takes microseconds, capturing must not.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use fdguard_core::report::Frame;

use super::stack::{Captured, Stacks};
use super::table::StackKey;

#[derive(Default)]
pub struct Interned {
    /// By executable image (its `Stacks`, by address) and captured stack.
    keys: HashMap<(usize, Captured), StackKey>,
    stacks: Vec<(Rc<Stacks>, Captured)>,
    named: RefCell<HashMap<StackKey, Vec<Frame>>>,
}

impl Interned {
    /// The key of `captured`, a stack of a process running `image`.
    pub fn key(&mut self, image: &Rc<Stacks>, captured: Captured) -> StackKey {
        let id = Rc::as_ptr(image) as usize;
        if let Some(key) = self.keys.get(&(id, captured.clone())) {
            return *key;
        }
        let key = StackKey(self.stacks.len() as u32);
        self.stacks.push((image.clone(), captured.clone()));
        self.keys.insert((id, captured), key);
        key
    }

    /// The frames of the stack `key` names (none for a key of another tracer).
    pub fn frames(&self, key: StackKey) -> Vec<Frame> {
        if let Some(frames) = self.named.borrow().get(&key) {
            return frames.clone();
        }
        let Some((image, captured)) = self.stacks.get(key.0 as usize) else {
            return Vec::new();
        };
        let frames = image.frames(captured);
        self.named.borrow_mut().insert(key, frames.clone());
        frames
    }
}
