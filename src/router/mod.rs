//! The subscription index: given a published topic, which subscriptions match it.
//!
//! # Role
//!
//! Every PUBLISH asks the index for its matches, on the publisher's own tokio task, on every core
//! at once. SUBSCRIBE and UNSUBSCRIBE are rare next to that. So a publish must neither scan the
//! subscriptions nor queue behind one lock, and the rare writers pay for it. The index knows
//! nothing about sessions: it maps filters to opaque per-subscription values `V` (the broker
//! keeps a session handle and the subscription options there) and hands them to a visitor.
//!
//! # Structure
//!
//! A filter's text alone decides where it lives, so it lives in exactly one place:
//!
//! - **Exact filters** (no `+` or `#`, such as `dev/42/cmd`, the bulk of an IoT fleet) are in
//!   [`SHARDS`] hash maps keyed by the whole filter, the shard chosen by hashing it. A topic
//!   matches an exact filter only by being equal to it, so a publish does one lookup in one
//!   shard, whatever the number of devices.
//! - **Wildcard filters with a literal first level** (`dev/+/telemetry`, `site/#`) are in
//!   [`SHARDS`] level tries, the shard chosen by hashing the first level. Such a filter can only
//!   match topics with that same first level, so a publish walks the one trie its own first
//!   level selects.
//! - **Filters starting with `+` or `#`** (`#`, `+/status`) may match any topic and are in one
//!   trie of their own, walked by every publish except those to `$` topics: [MQTT-4.7.2-1] keeps
//!   such filters from matching topics that start with `$`, and keeping them apart turns that
//!   rule into skipping one trie.
//!
//! Each trie shard keeps an atomic count of its subscriptions, and a publish skips a trie whose
//! count is zero without touching its lock: most first levels have no wildcard filter at all.
//!
//! Everything subscribed to one filter is a `FilterEntry`: its direct subscribers, and its share
//! groups ([`SharedGroup`]), since a shared subscription is matched by the filter after
//! `$share/{group}/`. Direct subscribers are reported one by one; a share group is reported once
//! and the broker [picks](SharedGroup::pick) the member.
//!
//! # Invariants
//!
//! - A filter entry exists only while it holds a subscription, a share group only while it has a
//!   member, a trie node only while it has an entry or a branch below it: removal prunes, so
//!   memory follows the live subscriptions and not the churn behind them.
//! - [`SubscriptionIndex::len`] is the number of subscriptions (each share group member counts),
//!   and each trie shard's count the number in that trie. Both change only under the write lock
//!   of the shard being changed, so a subscription's removal is always counted after its
//!   addition and no count ever dips below zero, even transiently.
//! - A subscriber has at most one subscription per filter text (group included): subscribing
//!   again replaces the value.
//!
//! # Locking
//!
//! Each shard is a `parking_lot::RwLock`: readers (publishes) never wait for each other, and a
//! writer blocks only the publishes that need that shard, for the length of one map or trie
//! update. A publish takes at most three read locks one after another, never two at once; a
//! subscribe or unsubscribe takes one write lock. Nothing here is async, so no lock can be held
//! across an `.await`. The visitor of [`SubscriptionIndex::for_each_match`] runs under a read lock.
//!
//! A publish that races a subscribe may or may not see it, but since every subscription has one
//! home it is never seen twice; anything subscribed before the publish started is seen.
//!
//! # Known limit
//!
//! When a fleet publishes under one first level (`dev/...`) and wildcard filters exist under it,
//! every publisher takes the read lock of that one trie shard. Readers do not wait for each other
//! there, but they do share the lock's cache line. If profiles show it, that shard can become a
//! copy-on-write snapshot swapped by subscribers, at the cost of a copy per subscribe.

mod entry;
mod trie;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

pub use entry::SharedGroup;

use crate::topic::{TopicFilter, TopicName};
use entry::FilterEntry;
use trie::Node;

/// Number of exact-filter shards and of literal-first-level trie shards. A power of two, for
/// masking. With 64, a subscribe holds up the publishes of about 1/64 of the topics for the length
/// of one map update, and the shards of an index take 16 KiB.
pub const SHARDS: usize = 64;

/// Identifies a subscriber (a session) to the index. The broker assigns them; the index only
/// compares and hashes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(pub u64);

/// One match reported by [`SubscriptionIndex::for_each_match`].
#[derive(Debug)]
pub enum Matched<'a, V> {
    /// A non-shared subscription: deliver to this subscriber.
    Direct { id: SubscriberId, value: &'a V },
    /// A shared subscription: deliver to one member, chosen with [`SharedGroup::pick`].
    Shared(&'a SharedGroup<V>),
}

/// Keeps each shard on cache lines of its own, so that readers of one shard and the writer of
/// its neighbour do not invalidate each other's lines (128 bytes covers the adjacent-line
/// prefetch of x86 and the line size of recent ARM cores).
#[repr(align(128))]
#[derive(Default)]
struct CacheAligned<T>(T);

impl<T> Deref for CacheAligned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Exact filters whose hash selects this shard.
///
/// A `RwLock` because publishes only read and may do so in parallel; `parking_lot`'s because it
/// is small, does not poison, and is fair enough that a stream of readers cannot starve a
/// subscribe.
/// Keyed by the filter's own string (shared with the session's copy, not a second allocation).
type ExactShard<V> = RwLock<HashMap<Arc<str>, FilterEntry<V>>>;

/// One wildcard trie with its subscription count.
struct TrieShard<V> {
    /// Number of subscriptions in `trie`, read without the lock so that a publish can skip an
    /// empty trie. Changed only under the write lock; `Relaxed` is enough because the trie itself
    /// is only ever read under the lock: a stale zero means the publish raced the subscribe, where
    /// either order is correct.
    subscriptions: AtomicUsize,
    /// A `RwLock` for the same reasons as [`ExactShard`]: many concurrent readers, rare writers.
    trie: RwLock<Node<V>>,
}

impl<V> Default for TrieShard<V> {
    fn default() -> Self {
        TrieShard {
            subscriptions: AtomicUsize::new(0),
            trie: RwLock::new(Node::default()),
        }
    }
}

impl<V> TrieShard<V> {
    fn for_each_match<F>(&self, topic: &str, visit: &mut F)
    where
        F: FnMut(Matched<'_, V>),
    {
        if self.subscriptions.load(Ordering::Relaxed) == 0 {
            return;
        }
        let trie = self.trie.read();
        trie.for_each_match(topic, |entry| entry.visit(visit));
    }
}

/// The subscriptions of the whole broker, looked up by topic. See the [module docs](self).
pub struct SubscriptionIndex<V> {
    exact: Box<[CacheAligned<ExactShard<V>>]>,
    /// Wildcard filters whose first level is literal, by hash of that level.
    wildcard: Box<[CacheAligned<TrieShard<V>>]>,
    /// Filters whose first level is `+` or `#`.
    root_wildcard: CacheAligned<TrieShard<V>>,
    /// Chooses shards. Seeded per index so that clients cannot aim their filters at one shard; it
    /// is independent of the maps' own hashers, so a shard's keys still spread over its buckets.
    shard_hasher: RandomState,
    /// Number of subscriptions; see the invariants in the module docs.
    len: AtomicUsize,
}

impl<V> Default for SubscriptionIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> std::fmt::Debug for SubscriptionIndex<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<V> SubscriptionIndex<V> {
    pub fn new() -> Self {
        SubscriptionIndex {
            exact: (0..SHARDS).map(|_| CacheAligned::default()).collect(),
            wildcard: (0..SHARDS).map(|_| CacheAligned::default()).collect(),
            root_wildcard: CacheAligned::default(),
            shard_hasher: RandomState::new(),
            len: AtomicUsize::new(0),
        }
    }

    /// Adds `id`'s subscription to `filter`, or replaces its value if `id` already has one to the
    /// same filter text (same share group included). Returns true in that second case, which is
    /// what Retain Handling 1 ("send retained only if the subscription is new") needs.
    pub fn subscribe(&self, filter: &TopicFilter, id: SubscriberId, value: V) -> bool {
        let pattern = filter.filter();
        let group = filter.share_group();
        if filter.has_wildcards() {
            let shard = self.trie_shard(pattern);
            let mut trie = shard.trie.write();
            let replaced = trie.entry_or_insert(pattern).insert(group, id, value);
            if !replaced {
                shard.subscriptions.fetch_add(1, Ordering::Relaxed);
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            replaced
        } else {
            let mut map = self.exact_shard(pattern).write();
            let entry = match map.get_mut(pattern) {
                Some(entry) => entry,
                None => map.entry(filter.filter_shared()).or_default(),
            };
            let replaced = entry.insert(group, id, value);
            if !replaced {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            replaced
        }
    }

    /// Removes `id`'s subscription to `filter` (same share group); returns whether it existed.
    pub fn unsubscribe(&self, filter: &TopicFilter, id: SubscriberId) -> bool {
        let pattern = filter.filter();
        let group = filter.share_group();
        if filter.has_wildcards() {
            let shard = self.trie_shard(pattern);
            let mut trie = shard.trie.write();
            let removed = trie.remove(pattern, group, id);
            if removed {
                shard.subscriptions.fetch_sub(1, Ordering::Relaxed);
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            removed
        } else {
            let mut map = self.exact_shard(pattern).write();
            let Some(entry) = map.get_mut(pattern) else {
                return false;
            };
            let removed = entry.remove(group, id);
            if entry.is_empty() {
                map.remove(pattern);
                shrink_after_removal(&mut map);
            }
            if removed {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            removed
        }
    }

    /// Calls `visit` once per matching subscription, and once per matching share group.
    ///
    /// A subscriber with several matching filters (`a/+` and `a/#`) is reported once for each;
    /// the broker merges them into one delivery ([MQTT-3.3.4-2] allows one copy with the highest
    /// QoS, and 5.0 wants every matching Subscription Identifier). The order is unspecified.
    ///
    /// `visit` runs while a shard's read lock is held, and gets references that live only that
    /// long. It must not block, and must not call back into the index: a subscribe would
    /// deadlock, and even a nested read can, once a writer waits on the lock. A non-blocking push
    /// into a session mailbox and [`SharedGroup::pick`] are what it is for.
    pub fn for_each_match<F>(&self, topic: &TopicName, mut visit: F)
    where
        F: FnMut(Matched<'_, V>),
    {
        let topic = topic.as_str();
        {
            let map = self.exact_shard(topic).read();
            if let Some(entry) = map.get(topic) {
                entry.visit(&mut visit);
            }
        }
        let first_level = topic.split_once('/').map_or(topic, |(first, _)| first);
        self.wildcard[self.shard_of(first_level)].for_each_match(topic, &mut visit);
        // [MQTT-4.7.2-1] a filter starting with a wildcard does not match a `$` topic.
        if !topic.starts_with('$') {
            self.root_wildcard.for_each_match(topic, &mut visit);
        }
    }

    /// Every subscription of `id`, with its full filter text (`$share/{group}/` included). Walks
    /// the whole index, one shard's read lock at a time: for administrative views, not for the
    /// publish path.
    pub fn subscriptions_of(&self, id: SubscriberId, mut visit: impl FnMut(String, &V)) {
        let mut report = |pattern: &str, entry: &FilterEntry<V>| {
            for (group, value) in entry.of(id) {
                let filter = match group {
                    Some(group) => format!("$share/{group}/{pattern}"),
                    None => pattern.to_owned(),
                };
                visit(filter, value);
            }
        };
        for shard in self.exact.iter() {
            for (pattern, entry) in shard.read().iter() {
                report(pattern, entry);
            }
        }
        for shard in self
            .wildcard
            .iter()
            .chain(std::iter::once(&self.root_wildcard))
        {
            if shard.subscriptions.load(Ordering::Relaxed) != 0 {
                shard.trie.read().for_each_entry(&mut report);
            }
        }
    }

    /// Number of subscriptions, each share group member counted.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard_of(&self, key: &str) -> usize {
        // Truncating the hash is intended: only its low bits pick the shard.
        (self.shard_hasher.hash_one(key) as usize) & (SHARDS - 1)
    }

    fn exact_shard(&self, filter: &str) -> &ExactShard<V> {
        &self.exact[self.shard_of(filter)]
    }

    /// The trie that holds wildcard filter `filter`.
    fn trie_shard(&self, filter: &str) -> &TrieShard<V> {
        match filter.split_once('/').map_or(filter, |(first, _)| first) {
            "+" | "#" => &self.root_wildcard,
            literal => &self.wildcard[self.shard_of(literal)],
        }
    }

    /// Trie nodes in use, roots excluded: zero once every wildcard filter is gone.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.wildcard
            .iter()
            .chain(std::iter::once(&self.root_wildcard))
            .map(|shard| shard.trie.read().descendants())
            .sum()
    }

    /// Exact filters with at least one subscription.
    #[cfg(test)]
    fn exact_filter_count(&self) -> usize {
        self.exact.iter().map(|shard| shard.read().len()).sum()
    }
}

/// Gives memory back when a map has shrunk to a quarter of its capacity: maps do not shrink by
/// themselves, so one burst of subscriptions would otherwise be paid for forever. Halving leaves
/// room to grow again, so the cost stays amortised O(1) per removal.
fn shrink_after_removal<K: Eq + Hash, T, S: BuildHasher>(map: &mut HashMap<K, T, S>) {
    const MIN_CAPACITY: usize = 16;
    if map.capacity() > MIN_CAPACITY && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}
