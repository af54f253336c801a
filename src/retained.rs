//! Retained messages: the last retained PUBLISH of each topic, replayed to new subscriptions.
//!
//! # Role
//!
//! A PUBLISH with RETAIN set replaces what is kept for its topic, and one with an empty payload
//! clears it ([MQTT-3.3.1-6], [MQTT-3.3.1-7]). A SUBSCRIBE asks for every kept message whose
//! topic matches its filter. The session decides whether to ask (Retain Handling, no retained
//! replay for shared subscriptions); this store only keeps messages and finds them.
//!
//! # Structure
//!
//! Messages sit in level tries keyed by topic level, [`SHARDS`] of them, the shard chosen by
//! hashing the topic's first level. So retained publishes under different first levels take
//! different write locks, and a filter with a literal first level (`site/+/status`) walks the one
//! trie that can hold its matches, descending only the branches its levels allow; a filter
//! without wildcards is a single descent. Only a filter that starts with a wildcard (`#`,
//! `+/status`) visits every shard, and there it skips first levels starting with `$`
//! ([MQTT-4.7.2-1]).
//!
//! A trie rather than a flat map because the question is "which topics match `a/+/c`": a map
//! would have to test every topic in the shard.
//!
//! # Invariants
//!
//! - A node exists only while it holds a message or has children: clearing a topic prunes the
//!   nodes it leaves empty, so memory follows the retained set, not its history.
//! - [`RetainedStore::len`] is the number of messages held, changed only under a write lock.
//! - Expired messages are never returned. They are dropped when a lookup meets them or when
//!   [`RetainedStore::remove_expired`] sweeps; [`RetainedStore::get`] and
//!   [`RetainedStore::snapshot`] have no clock and return what is stored.
//!
//! # Locking
//!
//! Each shard is a `parking_lot::RwLock`: replays for new subscriptions read in parallel, and a
//! retained publish holds the write lock of one shard for one trie update. No lock is held while
//! another is taken, and nothing here is async, so none is held across an `.await`. Old messages
//! are dropped after the lock is released.
//!
//! Topics may have 32,768 levels, so walks keep explicit stacks and [`Drop`] takes a trie apart
//! iteratively: a recursive version would let one client overflow a worker's stack.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::str::Split;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::RwLock;
use smallvec::SmallVec;

use crate::message::Message;
use crate::topic::{TopicFilter, TopicName};

/// Number of shards. A power of two, for masking; retained publishes are rarer than plain ones,
/// so fewer shards than the subscription index suffice to keep writers apart.
pub const SHARDS: usize = 16;

/// What [`RetainedStore::set`] did, so the caller can count, persist or log it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetainedChange {
    /// The topic had no retained message and now has one.
    Added,
    /// The topic's retained message was replaced.
    Replaced,
    /// An empty payload cleared the topic's retained message.
    Removed,
    /// An empty payload for a topic that had no retained message.
    Unchanged,
}

/// The retained messages of the whole broker. See the [module docs](self).
pub struct RetainedStore {
    /// A `RwLock` per shard because replays only read and may run in parallel, while a write is
    /// one short trie update; `parking_lot`'s because it does not poison and keeps readers from
    /// starving a writer.
    shards: Box<[RwLock<Node>]>,
    /// Chooses shards; seeded per store so clients cannot aim their topics at one shard.
    shard_hasher: RandomState,
    /// Number of messages held.
    len: AtomicUsize,
}

impl Default for RetainedStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RetainedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetainedStore")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl RetainedStore {
    pub fn new() -> Self {
        RetainedStore {
            shards: (0..SHARDS).map(|_| RwLock::new(Node::default())).collect(),
            shard_hasher: RandomState::new(),
            len: AtomicUsize::new(0),
        }
    }

    /// Applies a retained PUBLISH: an empty payload clears the topic, anything else replaces what
    /// it held. The caller checks the RETAIN flag; the message is stored as given.
    pub fn set(&self, message: Arc<Message>) -> RetainedChange {
        let mut trie = self.shard(first_level(message.topic.as_str())).write();
        let (change, old) = if message.payload.is_empty() {
            let old = trie.remove_where(message.topic.as_str(), |_| true);
            let change = match old {
                Some(_) => RetainedChange::Removed,
                None => RetainedChange::Unchanged,
            };
            (change, old)
        } else {
            let topic = message.topic.clone();
            let old = trie.insert(topic.as_str(), message);
            let change = match old {
                Some(_) => RetainedChange::Replaced,
                None => RetainedChange::Added,
            };
            (change, old)
        };
        // Counted under the lock, so a topic's removal is always counted after its addition and
        // the count never dips below zero.
        match change {
            RetainedChange::Added => {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            RetainedChange::Removed => {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            RetainedChange::Replaced | RetainedChange::Unchanged => {}
        }
        drop(trie);
        // Free the old message (maybe its payload) outside the lock.
        drop(old);
        change
    }

    /// Every unexpired retained message whose topic matches `filter` (its part after any
    /// `$share/{group}/`), in no particular order. Expired messages met on the way are removed.
    pub fn matching(&self, filter: &TopicFilter, now: Instant) -> Vec<Arc<Message>> {
        let pattern = filter.filter();
        let mut found = Vec::new();
        match first_level(pattern) {
            "+" | "#" => {
                for shard in self.shards.iter() {
                    self.collect_matches(shard, pattern, now, &mut found);
                }
            }
            literal => self.collect_matches(self.shard(literal), pattern, now, &mut found),
        }
        found
    }

    /// The message retained for `topic`, expired or not (there is no clock here).
    pub fn get(&self, topic: &TopicName) -> Option<Arc<Message>> {
        let topic = topic.as_str();
        self.shard(first_level(topic))
            .read()
            .find(topic)
            .and_then(|node| node.message.clone())
    }

    /// Number of retained messages, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every message expired at `now` and returns them. For a periodic sweep, so that
    /// messages nobody asks for do not stay forever. Each shard is scanned under its read lock
    /// and locked for writing only if it has something to drop.
    pub fn remove_expired(&self, now: Instant) -> Vec<Arc<Message>> {
        let mut dropped = Vec::new();
        for shard in self.shards.iter() {
            let mut expired = Vec::new();
            shard.read().for_each_message(|message| {
                if message.is_expired(now) {
                    expired.push(Arc::clone(message));
                }
            });
            dropped.extend(self.drop_expired(shard, expired));
        }
        dropped
    }

    /// Every stored message, expired or not, for the persistence layer. Not atomic across shards:
    /// a retained publish running meanwhile may or may not be in it.
    pub fn snapshot(&self) -> Vec<Arc<Message>> {
        let mut all = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            shard
                .read()
                .for_each_message(|message| all.push(Arc::clone(message)));
        }
        all
    }

    fn shard(&self, first_level: &str) -> &RwLock<Node> {
        // Truncating the hash is intended: only its low bits pick the shard.
        &self.shards[(self.shard_hasher.hash_one(first_level) as usize) & (SHARDS - 1)]
    }

    /// Appends the matches of `pattern` in `shard` to `found`, then drops those that expired.
    fn collect_matches(
        &self,
        shard: &RwLock<Node>,
        pattern: &str,
        now: Instant,
        found: &mut Vec<Arc<Message>>,
    ) {
        let mut expired = Vec::new();
        shard.read().for_each_match(pattern, |message| {
            if message.is_expired(now) {
                expired.push(Arc::clone(message));
            } else {
                found.push(Arc::clone(message));
            }
        });
        self.drop_expired(shard, expired);
    }

    /// Removes the `expired` messages from `shard` unless they were replaced since they were seen
    /// under the read lock; returns those it removed.
    fn drop_expired(&self, shard: &RwLock<Node>, expired: Vec<Arc<Message>>) -> Vec<Arc<Message>> {
        if expired.is_empty() {
            return expired;
        }
        let mut trie = shard.write();
        let dropped: Vec<_> = expired
            .into_iter()
            .filter(|old| {
                trie.remove_where(old.topic.as_str(), |stored| Arc::ptr_eq(stored, old))
                    .is_some()
            })
            .collect();
        self.len.fetch_sub(dropped.len(), Ordering::Relaxed);
        dropped
    }

    /// Trie nodes in use, roots excluded: zero once every message is gone.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let trie = shard.read();
                let mut count = 0;
                let mut pending = vec![&*trie];
                while let Some(node) = pending.pop() {
                    count += node.children.len();
                    pending.extend(node.children.values());
                }
                count
            })
            .sum::<usize>()
    }
}

/// The first level of a topic or filter.
fn first_level(s: &str) -> &str {
    s.split_once('/').map_or(s, |(first, _)| first)
}

/// One topic level. The root of a shard stands for no topic (every topic has a first level, if
/// only an empty one) and never holds a message.
#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

impl Node {
    fn find(&self, topic: &str) -> Option<&Node> {
        topic
            .split('/')
            .try_fold(self, |node, level| node.children.get(level))
    }

    /// Stores `message` at `topic`, creating the path; returns the message it replaced.
    fn insert(&mut self, topic: &str, message: Arc<Message>) -> Option<Arc<Message>> {
        let mut node = self;
        for level in topic.split('/') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        node.message.replace(message)
    }

    /// Removes the message at `topic` if `pred` accepts it, pruning the nodes left empty;
    /// returns the removed message.
    fn remove_where(
        &mut self,
        topic: &str,
        pred: impl FnOnce(&Arc<Message>) -> bool,
    ) -> Option<Arc<Message>> {
        let mut node = &mut *self;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        if !node.message.as_ref().is_some_and(pred) {
            return None;
        }
        let removed = node.message.take();
        if node.children.is_empty() {
            self.prune(topic);
        }
        removed
    }

    /// Cuts off the longest chain at the end of `topic`'s path made of nodes that hold no message
    /// and nothing but the next node of the chain.
    fn prune(&mut self, topic: &str) {
        let path: Vec<&str> = topic.split('/').collect();
        let mut cut = None;
        let mut node = &*self;
        for (depth, level) in path.iter().enumerate() {
            let Some(child) = node.children.get(*level) else {
                return;
            };
            let is_last = depth + 1 == path.len();
            if child.message.is_none() && child.children.len() == usize::from(!is_last) {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
            node = child;
        }
        let Some(cut) = cut else {
            return;
        };
        let mut parent = &mut *self;
        for level in &path[..cut] {
            match parent.children.get_mut(*level) {
                Some(child) => parent = child,
                None => return,
            }
        }
        parent.children.remove(path[cut]);
        shrink_after_removal(&mut parent.children);
    }

    /// Calls `visit` with every message whose topic matches `filter`, with the `$` rule.
    fn for_each_match<'a>(&'a self, filter: &'a str, mut visit: impl FnMut(&'a Arc<Message>)) {
        // Depth-first with an explicit stack. The flag marks the root, where a wildcard must skip
        // `$` first levels ([MQTT-4.7.2-1]).
        let mut pending: SmallVec<[(&Node, Split<'a, char>, bool); 8]> = SmallVec::new();
        pending.push((self, filter.split('/'), true));
        while let Some((node, mut levels, at_root)) = pending.pop() {
            match levels.next() {
                None => {
                    if let Some(message) = &node.message {
                        visit(message);
                    }
                }
                // `#` matches this level too (`a/#` matches `a`), then everything below.
                Some("#") => {
                    if let Some(message) = &node.message {
                        visit(message);
                    }
                    let mut below: Vec<&Node> = node.wildcard_children(at_root).collect();
                    while let Some(node) = below.pop() {
                        if let Some(message) = &node.message {
                            visit(message);
                        }
                        below.extend(node.children.values());
                    }
                }
                Some("+") => {
                    for child in node.wildcard_children(at_root) {
                        pending.push((child, levels.clone(), false));
                    }
                }
                Some(literal) => {
                    if let Some(child) = node.children.get(literal) {
                        pending.push((child, levels, false));
                    }
                }
            }
        }
    }

    /// The children a wildcard level descends into: all of them, except the `$` first levels
    /// when this is the root ([MQTT-4.7.2-1]).
    fn wildcard_children(&self, at_root: bool) -> impl Iterator<Item = &Node> {
        self.children
            .iter()
            .filter(move |(level, _)| !(at_root && level.starts_with('$')))
            .map(|(_, child)| child)
    }

    /// Calls `visit` with every message in this trie.
    fn for_each_message<'a>(&'a self, mut visit: impl FnMut(&'a Arc<Message>)) {
        let mut pending = vec![self];
        while let Some(node) = pending.pop() {
            if let Some(message) = &node.message {
                visit(message);
            }
            pending.extend(node.children.values());
        }
    }
}

impl Drop for Node {
    /// Takes the subtree apart with a heap stack: the derived drop would recurse once per level.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut pending: Vec<Node> = self.children.drain().map(|(_, child)| child).collect();
        while let Some(mut node) = pending.pop() {
            pending.extend(node.children.drain().map(|(_, child)| child));
            // `node` drops here without children.
        }
    }
}

/// Gives memory back when a map has shrunk to a quarter of its capacity (maps never shrink by
/// themselves); halving leaves room to grow, so the cost stays amortised O(1) per removal.
fn shrink_after_removal(map: &mut HashMap<Box<str>, Node>) {
    const MIN_CAPACITY: usize = 16;
    if map.capacity() > MIN_CAPACITY && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::codec::{PublishProperties, QoS};
    use crate::topic::filter_matches;

    fn message(topic: &str, payload: &str, expires_at: Option<Instant>) -> Arc<Message> {
        Arc::new(Message {
            topic: TopicName::new_allow_empty(topic).expect("valid topic"),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at,
            origin: None,
            published_at: None,
        })
    }

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).expect("valid filter")
    }

    fn topic(s: &str) -> TopicName {
        TopicName::new_allow_empty(s).expect("valid topic")
    }

    /// (topic, payload) of every match, sorted.
    fn matches(store: &RetainedStore, f: &str, now: Instant) -> Vec<(String, String)> {
        let mut out: Vec<_> = store
            .matching(&filter(f), now)
            .iter()
            .map(|m| {
                let payload = String::from_utf8(m.payload.to_vec()).expect("utf-8");
                (m.topic.to_string(), payload)
            })
            .collect();
        out.sort();
        out
    }

    fn payload_of(store: &RetainedStore, t: &str) -> Option<Bytes> {
        store.get(&topic(t)).map(|m| m.payload.clone())
    }

    #[test]
    fn set_adds_replaces_and_clears() {
        let store = RetainedStore::new();
        assert_eq!(store.set(message("a/b", "1", None)), RetainedChange::Added);
        assert_eq!(
            store.set(message("a/b", "2", None)),
            RetainedChange::Replaced
        );
        assert_eq!(payload_of(&store, "a/b").as_deref(), Some(&b"2"[..]));
        assert_eq!(store.set(message("a", "p", None)), RetainedChange::Added);
        assert_eq!(store.len(), 2);

        // [MQTT-3.3.1-6/7]: an empty payload clears the topic and is not itself retained.
        assert_eq!(store.set(message("a/b", "", None)), RetainedChange::Removed);
        assert_eq!(
            store.set(message("a/b", "", None)),
            RetainedChange::Unchanged
        );
        assert_eq!(
            store.set(message("x/y", "", None)),
            RetainedChange::Unchanged
        );
        assert_eq!(payload_of(&store, "a/b"), None);
        assert_eq!(payload_of(&store, "a").as_deref(), Some(&b"p"[..]));
        assert_eq!(store.len(), 1);
        // Clearing `a/b` kept `a`, which holds a message; clearing `a` leaves nothing.
        assert_eq!(store.node_count(), 1);
        assert_eq!(store.set(message("a", "", None)), RetainedChange::Removed);
        assert_eq!(store.node_count(), 0);
        assert!(store.is_empty());
    }

    #[test]
    fn matching_follows_the_spec_examples_and_the_dollar_rule() {
        let store = RetainedStore::new();
        let topics = [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport",
            "sport/",
            "/finance",
            "$SYS/uptime",
            "$SYS/monitor/Clients",
            "a/b/c",
        ];
        for t in topics {
            store.set(message(t, t, None));
        }
        let now = Instant::now();
        let cases: &[(&str, &[&str])] = &[
            (
                "sport/tennis/player1/#",
                &[
                    "sport/tennis/player1",
                    "sport/tennis/player1/ranking",
                    "sport/tennis/player1/score/wimbledon",
                ],
            ),
            (
                "sport/#",
                &[
                    "sport",
                    "sport/",
                    "sport/tennis/player1",
                    "sport/tennis/player1/ranking",
                    "sport/tennis/player1/score/wimbledon",
                ],
            ),
            ("sport/tennis/+", &["sport/tennis/player1"]),
            ("sport/+", &["sport/"]),
            ("+", &["sport"]),
            ("+/+", &["/finance", "sport/"]),
            ("/+", &["/finance"]),
            ("a/+/c", &["a/b/c"]),
            ("a/b/c", &["a/b/c"]),
            ("a/b", &[]),
            // [MQTT-4.7.2-1]
            (
                "#",
                &[
                    "/finance",
                    "a/b/c",
                    "sport",
                    "sport/",
                    "sport/tennis/player1",
                    "sport/tennis/player1/ranking",
                    "sport/tennis/player1/score/wimbledon",
                ],
            ),
            ("+/monitor/Clients", &[]),
            ("$SYS/#", &["$SYS/monitor/Clients", "$SYS/uptime"]),
            ("$SYS/monitor/+", &["$SYS/monitor/Clients"]),
            ("$SYS/uptime", &["$SYS/uptime"]),
            // A shared filter is matched by its part after the group.
            ("$share/g/sport/+", &["sport/"]),
        ];
        for (f, expected) in cases {
            let expected: Vec<_> = expected
                .iter()
                .map(|t| (t.to_string(), t.to_string()))
                .collect();
            assert_eq!(matches(&store, f, now), expected, "filter {f}");
        }
    }

    #[test]
    fn expired_messages_are_skipped_and_dropped() {
        let store = RetainedStore::new();
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        store.set(message("a/short", "s", Some(later)));
        store.set(message(
            "a/long",
            "l",
            Some(later + Duration::from_secs(60)),
        ));
        store.set(message("b/short", "s", Some(later)));
        store.set(message("b/never", "n", None));
        assert_eq!(matches(&store, "a/+", now).len(), 2);
        assert_eq!(store.len(), 4);

        // The deadline itself counts as expired.
        assert_eq!(
            matches(&store, "a/+", later),
            [("a/long".to_string(), "l".to_string())]
        );
        assert_eq!(store.len(), 3, "the lookup dropped a/short");
        assert!(store.get(&topic("a/short")).is_none());
        // `get` has no clock: b/short is still there until a sweep.
        assert!(store.get(&topic("b/short")).is_some());
        assert_eq!(store.remove_expired(later).len(), 1);
        assert_eq!(store.remove_expired(later).len(), 0);
        assert!(store.get(&topic("b/short")).is_none());
        assert_eq!(store.len(), 2);
        assert_eq!(store.node_count(), 4, "a, a/long, b, b/never");
    }

    #[test]
    fn an_expired_message_replaced_meanwhile_is_kept() {
        let store = RetainedStore::new();
        let now = Instant::now();
        let stale = message("t", "old", Some(now));
        store.set(Arc::clone(&stale));
        // As if a publish replaced it between the read and the write lock of a lookup.
        store.set(message("t", "new", None));
        assert_eq!(store.drop_expired(store.shard("t"), vec![stale]).len(), 0);
        assert_eq!(payload_of(&store, "t").as_deref(), Some(&b"new"[..]));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn snapshot_holds_every_message_dollar_and_expired_included() {
        let store = RetainedStore::new();
        let now = Instant::now();
        for t in ["$SYS/x", "a", "a/b", "", "/"] {
            store.set(message(t, "p", Some(now)));
        }
        let topics: BTreeSet<String> = store
            .snapshot()
            .iter()
            .map(|m| m.topic.to_string())
            .collect();
        let expected: BTreeSet<String> = ["$SYS/x", "a", "a/b", "", "/"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(topics, expected);
    }

    #[test]
    fn very_deep_topics_do_not_exhaust_the_stack() {
        const LEVELS: usize = 30_000;
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let store = RetainedStore::new();
                let deep = "a/".repeat(LEVELS) + "z";
                store.set(message(&deep, "p", None));
                store.set(message(&("b/".repeat(LEVELS) + "z"), "p", None));
                let now = Instant::now();
                assert_eq!(store.matching(&filter("#"), now).len(), 2);
                assert_eq!(store.matching(&filter("a/#"), now).len(), 1);
                let plus = "+/".repeat(LEVELS) + "z";
                assert_eq!(store.matching(&filter(&plus), now).len(), 2);
                assert_eq!(store.set(message(&deep, "", None)), RetainedChange::Removed);
                assert_eq!(store.node_count(), LEVELS + 1);
                // The other chain goes with the store.
                drop(store);
            })
            .expect("spawn")
            .join()
            .expect("no stack overflow");
    }

    #[test]
    fn concurrent_sets_and_lookups_end_in_the_model_state() {
        const TOPICS: [&str; 6] = ["a", "a/b", "a/c", "b/b", "$SYS/x", "c"];
        let store = Arc::new(RetainedStore::new());
        store.set(message("stable/x", "s", None));
        let writers: Vec<_> = (0..2usize)
            .map(|thread| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    // Each writer owns the topics under its own prefix, so its model is exact.
                    let mut model = BTreeMap::new();
                    for round in 0..2_000usize {
                        let t =
                            format!("w{thread}/{}", TOPICS[(round * 7 + thread) % TOPICS.len()]);
                        let payload = if round % 3 == 0 {
                            String::new()
                        } else {
                            round.to_string()
                        };
                        let change = store.set(message(&t, &payload, None));
                        let before = if payload.is_empty() {
                            model.remove(&t)
                        } else {
                            model.insert(t, payload.clone())
                        };
                        let expected = match (before.is_some(), payload.is_empty()) {
                            (false, false) => RetainedChange::Added,
                            (true, false) => RetainedChange::Replaced,
                            (true, true) => RetainedChange::Removed,
                            (false, true) => RetainedChange::Unchanged,
                        };
                        assert_eq!(change, expected);
                    }
                    model
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for _ in 0..300 {
                        let now = Instant::now();
                        for f in ["#", "+/a/+", "w0/#", "stable/x"] {
                            let found = store.matching(&filter(f), now);
                            if f == "#" || f == "stable/x" {
                                assert!(found.iter().any(|m| m.topic.as_str() == "stable/x"));
                            }
                        }
                    }
                })
            })
            .collect();
        let mut model = BTreeMap::new();
        for writer in writers {
            model.extend(writer.join().expect("writer"));
        }
        for reader in readers {
            reader.join().expect("reader");
        }
        model.insert("stable/x".to_string(), "s".to_string());
        assert_eq!(store.len(), model.len());
        let expected: Vec<_> = model.into_iter().collect();
        assert_eq!(matches(&store, "#", Instant::now()), expected);
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "$x", ""]);
        prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "$x", "", "+"]);
        (
            prop::collection::vec(level, 0..5),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_filter_map("valid filter", |(levels, hash, shared)| {
                let mut f = levels.join("/");
                if hash || levels.is_empty() {
                    if !levels.is_empty() {
                        f.push('/');
                    }
                    f.push('#');
                }
                if shared {
                    f = format!("$share/g/{f}");
                }
                TopicFilter::new(&f).ok().map(|_| f)
            })
    }

    proptest! {
        #[test]
        fn matching_equals_brute_force_over_a_model(
            ops in prop::collection::vec((topic_strategy(), 0u8..4), 0..60),
            filters in prop::collection::vec(filter_strategy(), 1..20),
        ) {
            let store = RetainedStore::new();
            let mut model: BTreeMap<String, String> = BTreeMap::new();
            for (t, n) in ops {
                // One time in four an empty payload, which clears.
                let payload = if n == 0 { String::new() } else { format!("{t} {n}") };
                let before = if payload.is_empty() {
                    model.remove(&t)
                } else {
                    model.insert(t.clone(), payload.clone())
                };
                let expected = match (before.is_some(), payload.is_empty()) {
                    (false, false) => RetainedChange::Added,
                    (true, false) => RetainedChange::Replaced,
                    (true, true) => RetainedChange::Removed,
                    (false, true) => RetainedChange::Unchanged,
                };
                prop_assert_eq!(store.set(message(&t, &payload, None)), expected);
                prop_assert_eq!(store.len(), model.len());
            }
            let now = Instant::now();
            for f in &filters {
                let matched_part = filter(f).filter().to_string();
                let expected: Vec<(String, String)> = model
                    .iter()
                    .filter(|(t, _)| filter_matches(&matched_part, t))
                    .map(|(t, p)| (t.clone(), p.clone()))
                    .collect();
                prop_assert_eq!(matches(&store, f, now), expected, "filter {}", f);
            }
            for t in model.keys() {
                prop_assert_eq!(store.get(&topic(t)).map(|m| m.topic.to_string()), Some(t.clone()));
                prop_assert_eq!(store.set(message(t, "", None)), RetainedChange::Removed);
            }
            prop_assert!(store.is_empty());
            prop_assert_eq!(store.node_count(), 0);
        }
    }
}
