//! The level trie that holds wildcard filters.
//!
//! Each node stands for a filter prefix. A filter ending in `#` lives in the `hash` slot of the
//! node for its prefix without the `#`; any other filter lives in the `here` slot of its last
//! level's node. `+` levels follow the `plus` edge rather than a child entry, so a match takes at
//! most two branches per topic level and never iterates a node's children.
//!
//! Invariant: every node other than the root has an entry or a branch below it. [`Node::remove`]
//! restores it by cutting off the chain of nodes a removal leaves empty, so memory follows the
//! current subscriptions, not their history.
//!
//! A filter may have up to 32,768 levels (65,535 bytes of `+/+/…`), so nothing here recurses on
//! depth: matching keeps an explicit stack, and [`Drop`] takes a dead subtree apart iteratively.
//! A recursive walk would let one client overflow a 2 MiB tokio worker stack.

use std::collections::HashMap;
use std::str::Split;

use smallvec::SmallVec;

use super::entry::FilterEntry;
use super::{SubscriberId, shrink_after_removal};

/// One level of the trie.
pub(super) struct Node<V> {
    /// Literal next levels.
    children: HashMap<Box<str>, Node<V>>,
    /// The `+` next level.
    plus: Option<Box<Node<V>>>,
    /// Filters that end at this node. Boxed, like `hash`: most nodes are only a way through.
    here: Option<Box<FilterEntry<V>>>,
    /// Filters that are this node's prefix followed by `/#` (or `#` at the root).
    hash: Option<Box<FilterEntry<V>>>,
}

/// Which slot of its node a filter occupies.
#[derive(Clone, Copy)]
enum Slot {
    Here,
    Hash,
}

/// The levels leading to a filter's node, and the slot it takes there.
fn locate(filter: &str) -> (Vec<&str>, Slot) {
    // A validated filter has `#` only as its whole last level.
    if filter == "#" {
        (Vec::new(), Slot::Hash)
    } else if let Some(prefix) = filter.strip_suffix("/#") {
        (prefix.split('/').collect(), Slot::Hash)
    } else {
        (filter.split('/').collect(), Slot::Here)
    }
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            plus: None,
            here: None,
            hash: None,
        }
    }
}

impl<V> Node<V> {
    fn child(&self, level: &str) -> Option<&Node<V>> {
        match level {
            "+" => self.plus.as_deref(),
            literal => self.children.get(literal),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<V>> {
        match level {
            "+" => self.plus.as_deref_mut(),
            literal => self.children.get_mut(literal),
        }
    }

    fn slot_mut(&mut self, slot: Slot) -> &mut Option<Box<FilterEntry<V>>> {
        match slot {
            Slot::Here => &mut self.here,
            Slot::Hash => &mut self.hash,
        }
    }

    fn branches(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    /// The entry for `filter` (a wildcard filter, without `$share/` prefix), created with its path
    /// if missing.
    pub(super) fn entry_or_insert(&mut self, filter: &str) -> &mut FilterEntry<V> {
        let (path, slot) = locate(filter);
        let mut node = self;
        for level in path {
            node = match level {
                "+" => node.plus.get_or_insert_with(Box::default),
                literal => node.children.entry(Box::from(literal)).or_default(),
            };
        }
        node.slot_mut(slot).get_or_insert_with(Box::default)
    }

    /// Removes `id`'s subscription to `filter` in `group`; returns whether it existed. Prunes the
    /// nodes the removal leaves empty.
    pub(super) fn remove(&mut self, filter: &str, group: Option<&str>, id: SubscriberId) -> bool {
        let (path, slot) = locate(filter);
        let mut node = &mut *self;
        for level in &path {
            match node.child_mut(level) {
                Some(child) => node = child,
                None => return false,
            }
        }
        let entry = node.slot_mut(slot);
        let Some(filter_entry) = entry else {
            return false;
        };
        if !filter_entry.remove(group, id) {
            return false;
        }
        if filter_entry.is_empty() {
            *entry = None;
            self.prune(&path);
        }
        true
    }

    /// Cuts off the longest chain at the end of `path` made of nodes that hold nothing but the
    /// next node of the chain.
    fn prune(&mut self, path: &[&str]) {
        // Find where that chain starts, looking down from the root.
        let mut cut = None;
        let mut node = &*self;
        for (depth, level) in path.iter().enumerate() {
            let Some(child) = node.child(level) else {
                return;
            };
            let is_last = depth + 1 == path.len();
            let only_the_path = child.here.is_none()
                && child.hash.is_none()
                && child.branches() == usize::from(!is_last);
            if only_the_path {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
            node = child;
        }
        let Some(cut) = cut else {
            return;
        };
        // Then detach it from its parent; `Drop` takes the chain apart.
        let mut parent = &mut *self;
        for level in &path[..cut] {
            match parent.child_mut(level) {
                Some(child) => parent = child,
                None => return,
            }
        }
        match path[cut] {
            "+" => parent.plus = None,
            literal => {
                parent.children.remove(literal);
                shrink_after_removal(&mut parent.children);
            }
        }
    }

    /// Calls `visit` with every entry whose filter matches `topic`.
    ///
    /// Does not apply the `$` rule: the index keeps filters that start with a wildcard in a trie
    /// of their own and skips it for `$` topics.
    pub(super) fn for_each_match<'a>(
        &'a self,
        topic: &'a str,
        mut visit: impl FnMut(&'a FilterEntry<V>),
    ) {
        // Depth-first with an explicit stack; eight pending branches cover real topics without
        // touching the heap.
        let mut pending: SmallVec<[(&Node<V>, Split<'a, char>); 8]> = SmallVec::new();
        pending.push((self, topic.split('/')));
        while let Some((node, mut levels)) = pending.pop() {
            // `#` matches the remaining levels, none included: `a/#` matches `a`.
            if let Some(entry) = &node.hash {
                visit(entry);
            }
            match levels.next() {
                None => {
                    if let Some(entry) = &node.here {
                        visit(entry);
                    }
                }
                Some(level) => {
                    if let Some(child) = node.children.get(level) {
                        pending.push((child, levels.clone()));
                    }
                    if let Some(plus) = &node.plus {
                        pending.push((plus, levels));
                    }
                }
            }
        }
    }

    /// Calls `visit` with every entry in the trie and its filter text (without `$share/`). For
    /// administrative views: it walks the whole trie, keeping one path buffer and an explicit stack
    /// so that deep filters cost neither recursion nor a copy of the path per node.
    pub(super) fn for_each_entry(&self, mut visit: impl FnMut(&str, &FilterEntry<V>)) {
        enum Step<'a, V> {
            Enter(&'a Node<V>, &'a str, usize),
            Leave(usize),
        }
        let mut path = String::new();
        let mut pending = vec![Step::Enter(self, "", 0)];
        while let Some(step) = pending.pop() {
            let (node, depth) = match step {
                Step::Leave(len) => {
                    path.truncate(len);
                    continue;
                }
                Step::Enter(node, level, depth) => {
                    pending.push(Step::Leave(path.len()));
                    if depth > 1 {
                        path.push('/');
                    }
                    path.push_str(level);
                    (node, depth)
                }
            };
            if let Some(entry) = &node.here {
                visit(&path, entry);
            }
            if let Some(entry) = &node.hash {
                let filter = if depth == 0 {
                    "#".to_owned()
                } else {
                    format!("{path}/#")
                };
                visit(&filter, entry);
            }
            for (level, child) in &node.children {
                pending.push(Step::Enter(child, level, depth + 1));
            }
            if let Some(plus) = &node.plus {
                pending.push(Step::Enter(plus, "+", depth + 1));
            }
        }
    }

    /// Nodes below this one, for tests that check pruning.
    #[cfg(test)]
    pub(super) fn descendants(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![self];
        while let Some(node) = pending.pop() {
            count += node.branches();
            pending.extend(node.children.values());
            pending.extend(node.plus.as_deref());
        }
        count
    }

    /// Moves this node's subtrees into `out`.
    fn detach_branches(&mut self, out: &mut Vec<Node<V>>) {
        out.extend(self.children.drain().map(|(_, child)| child));
        if let Some(plus) = self.plus.take() {
            out.push(*plus);
        }
    }
}

impl<V> Drop for Node<V> {
    /// Takes the subtree apart with a heap stack: the derived drop would recurse once per level.
    fn drop(&mut self) {
        if self.branches() == 0 {
            return;
        }
        let mut pending = Vec::new();
        self.detach_branches(&mut pending);
        while let Some(mut node) = pending.pop() {
            node.detach_branches(&mut pending);
            // `node` drops here without branches.
        }
    }
}
