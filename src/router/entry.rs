//! Everything subscribed to one filter: its direct subscribers and its shared groups.
//!
//! An entry lives either in an exact shard (keyed by the whole filter) or in a trie slot; it exists
//! only while it is non-empty, and the owner removes it as soon as [`FilterEntry::is_empty`] says
//! so.

use std::sync::atomic::{AtomicUsize, Ordering};

use indexmap::IndexMap;

use super::{Matched, SubscriberId};

/// The subscriptions to one filter (the matched part, without any `$share/{group}/` prefix).
///
/// Small, because there is one per distinct filter and fleets subscribe each device to filters
/// of its own (`devices/{id}/commands`): one direct subscriber is held inline, and the tables for
/// several subscribers or for share groups are allocated only when needed.
#[derive(Debug)]
pub(super) struct FilterEntry<V> {
    direct: Direct<V>,
    /// `$share/{group}/{filter}` subscriptions by group name. A shared subscription is identified
    /// by group and filter together (MQTT 5.0 section 4.8.2), so groups live under their filter.
    shared: Option<Box<IndexMap<Box<str>, SharedGroup<V>>>>,
}

impl<V> Default for FilterEntry<V> {
    fn default() -> Self {
        FilterEntry {
            direct: Direct::Empty,
            shared: None,
        }
    }
}

/// Non-shared subscribers of one filter. Delivery order among them carries no meaning, so removal
/// is `swap_remove`: O(1) however many sessions share a filter like `alerts/#`.
#[derive(Debug)]
enum Direct<V> {
    Empty,
    One(SubscriberId, V),
    Many(Box<IndexMap<SubscriberId, V>>),
}

impl<V> Direct<V> {
    /// Adds or replaces `id`'s value; returns true if it replaced one.
    fn insert(&mut self, id: SubscriberId, value: V) -> bool {
        let (next, replaced) = match std::mem::replace(self, Direct::Empty) {
            Direct::Empty => (Direct::One(id, value), false),
            Direct::One(existing, _) if existing == id => (Direct::One(id, value), true),
            Direct::One(first, first_value) => {
                let mut many = IndexMap::with_capacity(2);
                many.insert(first, first_value);
                many.insert(id, value);
                (Direct::Many(Box::new(many)), false)
            }
            Direct::Many(mut many) => {
                let replaced = many.insert(id, value).is_some();
                (Direct::Many(many), replaced)
            }
        };
        *self = next;
        replaced
    }

    fn remove(&mut self, id: SubscriberId) -> bool {
        match self {
            Direct::Empty => false,
            Direct::One(existing, _) => {
                let found = *existing == id;
                if found {
                    *self = Direct::Empty;
                }
                found
            }
            Direct::Many(many) => {
                let removed = many.swap_remove(&id).is_some();
                if many.len() == 1
                    && let Some((last, value)) = many.pop()
                {
                    // Back to the inline form: the table's memory goes with it.
                    *self = Direct::One(last, value);
                }
                removed
            }
        }
    }

    fn get(&self, id: SubscriberId) -> Option<&V> {
        match self {
            Direct::Empty => None,
            Direct::One(existing, value) => (*existing == id).then_some(value),
            Direct::Many(many) => many.get(&id),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Direct::Empty)
    }

    fn iter(&self) -> impl Iterator<Item = (SubscriberId, &V)> {
        let (one, many) = match self {
            Direct::Empty => (None, None),
            Direct::One(id, value) => (Some((*id, value)), None),
            Direct::Many(many) => (None, Some(many.iter().map(|(&id, value)| (id, value)))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl<V> FilterEntry<V> {
    /// Adds or replaces `id`'s subscription, directly or in share group `group`; returns true if
    /// it replaced one.
    pub(super) fn insert(&mut self, group: Option<&str>, id: SubscriberId, value: V) -> bool {
        let Some(group) = group else {
            return self.direct.insert(id, value);
        };
        let members = &mut self
            .shared
            .get_or_insert_with(Box::default)
            .entry(Box::from(group))
            .or_insert_with(SharedGroup::new)
            .members;
        // `insert` keeps an existing key in its place, so a re-subscribing group member keeps its
        // turn in the rotation.
        members.insert(id, value).is_some()
    }

    /// Removes `id`'s subscription; returns whether it existed. Drops a group left empty.
    pub(super) fn remove(&mut self, group: Option<&str>, id: SubscriberId) -> bool {
        let Some(group) = group else {
            return self.direct.remove(id);
        };
        let Some(shared) = self.shared.as_mut() else {
            return false;
        };
        let Some(members) = shared.get_mut(group).map(|g| &mut g.members) else {
            return false;
        };
        // `shift_remove` (O(group size), on the rare unsubscribe) keeps the others in join order,
        // which is the rotation order `SharedGroup::pick` promises.
        let removed = members.shift_remove(&id).is_some();
        if members.is_empty() {
            shared.swap_remove(group);
            if shared.is_empty() {
                self.shared = None;
            }
        }
        removed
    }

    pub(super) fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.shared.is_none()
    }

    /// `id`'s subscriptions in this entry: the direct one (group `None`) and one per share group.
    pub(super) fn of(&self, id: SubscriberId) -> impl Iterator<Item = (Option<&str>, &V)> {
        let direct = self.direct.get(id).map(|value| (None, value));
        let shared = self
            .shared
            .iter()
            .flat_map(|shared| shared.iter())
            .filter_map(move |(group, g)| g.members.get(&id).map(|value| (Some(&**group), value)));
        direct.into_iter().chain(shared)
    }

    /// Reports every direct subscriber, then every share group, to `visit`.
    pub(super) fn visit<'a, F>(&'a self, visit: &mut F)
    where
        F: FnMut(Matched<'a, V>),
    {
        for (id, value) in self.direct.iter() {
            visit(Matched::Direct { id, value });
        }
        for group in self.shared.iter().flat_map(|shared| shared.values()) {
            visit(Matched::Shared(group));
        }
    }
}

/// The members of one shared subscription `$share/{group}/{filter}`: each matching message goes to
/// exactly one of them ([MQTT-4.8.2-3] leaves the choice to the server), picked with
/// [`SharedGroup::pick`].
#[derive(Debug)]
pub struct SharedGroup<V> {
    /// In the order they joined, which is the rotation order.
    members: IndexMap<SubscriberId, V>,
    /// Position of the member to try first on the next pick. Publishers advance it while holding
    /// only the shard's read lock, hence an atomic. It is a scheduling hint that orders no other
    /// memory, so `Relaxed` suffices; a position past the end (members left since) is taken
    /// modulo the length.
    cursor: AtomicUsize,
}

impl<V> SharedGroup<V> {
    fn new() -> Self {
        SharedGroup {
            members: IndexMap::new(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Chooses the member that receives the next message, round robin.
    ///
    /// Starting after the previous pick, returns the first member for which `prefer` is true (the
    /// broker passes "its session is online", so a group keeps flowing while some members are
    /// away). When no member is preferred, returns the next member in turn anyway, so that its
    /// session queues the message for when it comes back. `None` only for an empty group, which
    /// the index never hands out.
    ///
    /// Lock-free: concurrent publishers claim turns with a compare-and-swap on the cursor, so two
    /// of them never take the same turn. Under contention a pick is retried and `prefer` may be
    /// called again for the same member; it must be cheap and free of side effects.
    pub fn pick(&self, prefer: impl Fn(&V) -> bool) -> Option<(SubscriberId, &V)> {
        let len = self.members.len();
        if len == 0 {
            return None;
        }
        let mut cursor = self.cursor.load(Ordering::Relaxed);
        loop {
            let start = cursor % len;
            let chosen = (0..len)
                .map(|step| (start + step) % len)
                .find(|&i| self.members.get_index(i).is_some_and(|(_, v)| prefer(v)))
                .unwrap_or(start);
            match self.cursor.compare_exchange_weak(
                cursor,
                chosen + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return self.members.get_index(chosen).map(|(&id, v)| (id, v)),
                Err(moved) => cursor = moved,
            }
        }
    }

    /// The members in rotation order, for the rare caller that needs all of them (statistics,
    /// an administrative view).
    pub fn iter(&self) -> impl Iterator<Item = (SubscriberId, &V)> {
        self.members.iter().map(|(&id, value)| (id, value))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if the group has no members (never the case for a group handed out by the index).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}
