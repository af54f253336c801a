use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;

use super::*;
use crate::topic::filter_matches;

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).expect("valid filter")
}

fn topic(s: &str) -> TopicName {
    TopicName::new_allow_empty(s).expect("valid topic")
}

/// What one publish reached, in a form that compares: direct subscriptions as (id, value) in
/// the order reported by the index (sorted afterwards), share groups as their sorted members.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reached {
    direct: Vec<(u64, String)>,
    shared: Vec<Vec<(u64, String)>>,
}

fn reached(index: &SubscriptionIndex<String>, topic_name: &str) -> Reached {
    let mut out = Reached::default();
    index.for_each_match(&topic(topic_name), |matched| match matched {
        Matched::Direct { id, value } => out.direct.push((id.0, value.clone())),
        Matched::Shared(group) => {
            let mut members: Vec<_> = group.iter().map(|(id, v)| (id.0, v.clone())).collect();
            members.sort();
            out.shared.push(members);
        }
    });
    out.direct.sort();
    out.shared.sort();
    out
}

/// The same, computed by testing every subscription of `model` with `topic::filter_matches`.
/// Model keys are (filter as subscribed, subscriber id).
fn brute_force(model: &BTreeMap<(String, u64), String>, topic_name: &str) -> Reached {
    let mut out = Reached::default();
    let mut groups: BTreeMap<&str, Vec<(u64, String)>> = BTreeMap::new();
    for ((full, id), value) in model {
        let f = filter(full);
        if !filter_matches(f.filter(), topic_name) {
            continue;
        }
        if f.is_shared() {
            groups.entry(full).or_default().push((*id, value.clone()));
        } else {
            out.direct.push((*id, value.clone()));
        }
    }
    out.direct.sort();
    out.shared = groups.into_values().collect();
    out.shared.sort();
    out
}

/// Filters reached by `topic_name`, for an index whose values are the filters themselves.
fn matched_filters(index: &SubscriptionIndex<String>, topic_name: &str) -> BTreeSet<String> {
    reached(index, topic_name)
        .direct
        .into_iter()
        .map(|(_, value)| value)
        .collect()
}

#[test]
fn matching_follows_the_spec_examples_and_the_dollar_rule() {
    let filters = [
        "sport/tennis/player1/#",
        "sport/#",
        "sport/tennis/+",
        "sport/+",
        "#",
        "+/+",
        "/+",
        "+",
        "+/monitor/Clients",
        "$SYS/#",
        "$SYS/monitor/+",
        "$SYS/monitor/Clients",
        "a/b",
    ];
    let index = SubscriptionIndex::new();
    for (n, f) in filters.iter().enumerate() {
        assert!(!index.subscribe(&filter(f), SubscriberId(n as u64), f.to_string()));
    }
    let cases: &[(&str, &[&str])] = &[
        (
            "sport/tennis/player1",
            &["sport/tennis/player1/#", "sport/#", "sport/tennis/+", "#"],
        ),
        (
            "sport/tennis/player1/ranking",
            &["sport/tennis/player1/#", "sport/#", "#"],
        ),
        (
            "sport/tennis/player1/score/wimbledon",
            &["sport/tennis/player1/#", "sport/#", "#"],
        ),
        // `#` matches the parent level; `+` needs a level, even an empty one.
        ("sport", &["sport/#", "#", "+"]),
        ("sport/", &["sport/#", "sport/+", "#", "+/+"]),
        ("/finance", &["#", "+/+", "/+"]),
        ("a/b", &["a/b", "#", "+/+"]),
        ("a/b/c", &["#"]),
        // [MQTT-4.7.2-1]: filters starting with a wildcard never match `$` topics.
        ("$SYS/uptime", &["$SYS/#"]),
        (
            "$SYS/monitor/Clients",
            &["$SYS/#", "$SYS/monitor/+", "$SYS/monitor/Clients"],
        ),
        ("$SYS", &["$SYS/#"]),
    ];
    for (topic_name, expected) in cases {
        let expected: BTreeSet<String> = expected.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            matched_filters(&index, topic_name),
            expected,
            "topic {topic_name}"
        );
    }
}

#[test]
fn subscribe_reports_replacement_and_keeps_the_new_value() {
    let index = SubscriptionIndex::new();
    let me = SubscriberId(7);
    for f in ["dev/1/cmd", "dev/+/telemetry", "#"] {
        assert!(!index.subscribe(&filter(f), me, "first".to_string()), "{f}");
        assert!(index.subscribe(&filter(f), me, "second".to_string()), "{f}");
    }
    assert_eq!(index.len(), 3);
    assert_eq!(
        reached(&index, "dev/1/cmd").direct,
        vec![(7, "second".to_string()), (7, "second".to_string())]
    );

    // The same filter in a share group, or in another group, is another subscription.
    assert!(!index.subscribe(&filter("$share/g/dev/1/cmd"), me, "g".to_string()));
    assert!(!index.subscribe(&filter("$share/h/dev/1/cmd"), me, "h".to_string()));
    assert!(index.subscribe(&filter("$share/g/dev/1/cmd"), me, "g2".to_string()));
    // Another subscriber to the same filter is new too.
    assert!(!index.subscribe(&filter("dev/1/cmd"), SubscriberId(8), "other".to_string()));
    assert_eq!(index.len(), 6);
    let got = reached(&index, "dev/1/cmd");
    assert_eq!(
        got.shared,
        vec![vec![(7, "g2".to_string())], vec![(7, "h".to_string())]]
    );
}

#[test]
fn unsubscribe_reports_whether_the_subscription_existed() {
    let index = SubscriptionIndex::new();
    let me = SubscriberId(1);
    for f in ["a/b", "a/+", "$share/g/a/b", "+/#"] {
        assert!(!index.unsubscribe(&filter(f), me), "{f} before subscribing");
        index.subscribe(&filter(f), me, f.to_string());
    }
    assert_eq!(index.len(), 4);
    // Wrong subscriber, wrong group, or the shared/non-shared twin: not the same subscription.
    assert!(!index.unsubscribe(&filter("a/b"), SubscriberId(2)));
    assert!(!index.unsubscribe(&filter("$share/h/a/b"), me));
    assert!(!index.unsubscribe(&filter("$share/g/a/+"), me));
    assert!(!index.unsubscribe(&filter("a/#"), me));
    assert_eq!(index.len(), 4);
    for f in ["a/b", "a/+", "$share/g/a/b", "+/#"] {
        assert!(index.unsubscribe(&filter(f), me), "{f}");
        assert!(!index.unsubscribe(&filter(f), me), "{f} twice");
    }
    assert!(index.is_empty());
    assert_eq!(reached(&index, "a/b"), Reached::default());
}

#[test]
fn removing_every_filter_leaves_no_trie_node_and_no_exact_entry() {
    let index = SubscriptionIndex::new();
    let filters = [
        "a/b/+/c",
        "a/b/#",
        "a/+/+",
        "+/x",
        "#",
        "+",
        "/+",
        "$SYS/#",
        "$share/g/jobs/+",
        "$share/g/jobs/1",
        "dev/1/cmd",
        "dev/2/cmd",
    ];
    for id in 0..3 {
        for f in filters {
            index.subscribe(&filter(f), SubscriberId(id), String::new());
        }
    }
    assert_eq!(index.len(), 3 * filters.len());
    assert_eq!(index.exact_filter_count(), 3);
    assert!(index.node_count() > 0);

    // Removing one filter keeps the nodes others still use: `a/b/#` needs `a` and `a/b`, and
    // `a/+/+` needs `a/+` and `a/+/+`.
    for id in 0..3 {
        assert!(index.unsubscribe(&filter("a/b/+/c"), SubscriberId(id)));
    }
    let after_one = index.node_count();
    for id in 0..3 {
        for f in ["+/x", "#", "+", "/+", "$SYS/#", "$share/g/jobs/+"] {
            assert!(index.unsubscribe(&filter(f), SubscriberId(id)));
        }
    }
    assert_eq!(index.node_count(), 4, "was {after_one} before");

    for id in 0..3 {
        for f in [
            "a/b/#",
            "a/+/+",
            "$share/g/jobs/1",
            "dev/1/cmd",
            "dev/2/cmd",
        ] {
            assert!(index.unsubscribe(&filter(f), SubscriberId(id)));
        }
    }
    assert_eq!(index.node_count(), 0);
    assert_eq!(index.exact_filter_count(), 0);
    assert!(index.is_empty());
    for shard in index.wildcard.iter() {
        assert_eq!(shard.subscriptions.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn shared_groups_rotate_in_join_order_and_fall_back_when_none_is_preferred() {
    let index = SubscriptionIndex::new();
    let shared = filter("$share/workers/jobs/+");
    for id in [10, 20, 30] {
        index.subscribe(&shared, SubscriberId(id), format!("worker {id}"));
    }
    // One delivery per group per publish, whatever its size; matched by `jobs/+`, the part after
    // the group.
    let mut picks = Vec::new();
    let mut pick_with = |prefer: &dyn Fn(u64) -> bool| {
        let mut groups = 0;
        index.for_each_match(&topic("jobs/build"), |matched| {
            let Matched::Shared(group) = matched else {
                panic!("only a shared subscription exists");
            };
            groups += 1;
            let (id, value) = group
                .pick(|v| {
                    let id = v.trim_start_matches("worker ").parse().expect("number");
                    prefer(id)
                })
                .expect("a member");
            assert_eq!(value, &format!("worker {}", id.0));
            picks.push(id.0);
        });
        assert_eq!(groups, 1);
    };
    for _ in 0..4 {
        pick_with(&|_| true);
    }
    // 20 is away: it is skipped, and the rotation goes on from the one picked.
    for _ in 0..4 {
        pick_with(&|id| id != 20);
    }
    // Only 30 is online: it gets everything.
    for _ in 0..2 {
        pick_with(&|id| id == 30);
    }
    // Nobody is online: the next member in turn anyway.
    for _ in 0..4 {
        pick_with(&|_| false);
    }
    assert_eq!(
        picks,
        [10, 20, 30, 10, 30, 10, 30, 10, 30, 30, 10, 20, 30, 10]
    );
    assert!(reached(&index, "$share/workers/jobs/x").shared.is_empty());
    assert!(reached(&index, "jobs").shared.is_empty());
}

#[test]
fn a_member_leaving_keeps_the_rotation_of_the_others() {
    let index = SubscriptionIndex::new();
    let shared = filter("$share/g/t");
    for id in 1..=4 {
        index.subscribe(&shared, SubscriberId(id), String::new());
    }
    let pick = || {
        let mut picked = None;
        index.for_each_match(&topic("t"), |matched| {
            if let Matched::Shared(group) = matched {
                picked = group.pick(|_| true).map(|(id, _)| id.0);
            }
        });
        picked
    };
    assert_eq!(pick(), Some(1));
    assert_eq!(pick(), Some(2));
    index.unsubscribe(&shared, SubscriberId(3));
    // Re-subscribing keeps 1's place; 3 is gone, so 4 follows 2.
    index.subscribe(&shared, SubscriberId(1), String::new());
    assert_eq!(pick(), Some(4));
    assert_eq!(pick(), Some(1));
    assert_eq!(pick(), Some(2));
    for id in [1, 2, 4] {
        index.unsubscribe(&shared, SubscriberId(id));
    }
    assert_eq!(pick(), None);
    assert!(index.is_empty());
}

#[test]
fn overlapping_filters_report_each_subscription_of_one_subscriber() {
    let index = SubscriptionIndex::new();
    let me = SubscriberId(5);
    let filters = ["a/b", "a/+", "a/#", "+/b", "#", "+/+", "$share/g/a/b"];
    for f in filters {
        index.subscribe(&filter(f), me, f.to_string());
    }
    let got = reached(&index, "a/b");
    let expected: Vec<(u64, String)> = ["#", "+/+", "+/b", "a/#", "a/+", "a/b"]
        .iter()
        .map(|f| (5, f.to_string()))
        .collect();
    assert_eq!(got.direct, expected);
    assert_eq!(got.shared, vec![vec![(5, "$share/g/a/b".to_string())]]);
}

#[test]
fn multi_level_wildcard_after_a_plus_needs_the_plus_level() {
    let index = SubscriptionIndex::new();
    index.subscribe(&filter("a/+/#"), SubscriberId(1), "a/+/#".to_string());
    assert!(matched_filters(&index, "a").is_empty());
    assert_eq!(matched_filters(&index, "a/b").len(), 1);
    assert_eq!(matched_filters(&index, "a/b/c/d").len(), 1);
    assert_eq!(matched_filters(&index, "a/").len(), 1);
}

/// A filter may have 32,768 levels. Matching, pruning and dropping such a trie must not recurse
/// per level: run them on a stack far smaller than the tokio worker default.
#[test]
fn very_deep_filters_do_not_exhaust_the_stack() {
    const LEVELS: usize = 30_000;
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let index = SubscriptionIndex::new();
            let plus = filter(&format!("{}#", "+/".repeat(LEVELS)));
            let literal = filter(&format!("{}+", "a/".repeat(LEVELS)));
            index.subscribe(&plus, SubscriberId(1), ());
            index.subscribe(&literal, SubscriberId(2), ());
            let deep = topic(&"a/".repeat(LEVELS + 1)[..2 * LEVELS + 1]);
            let mut hits = Vec::new();
            index.for_each_match(&deep, |matched| {
                if let Matched::Direct { id, .. } = matched {
                    hits.push(id.0);
                }
            });
            hits.sort_unstable();
            assert_eq!(hits, [1, 2]);
            assert!(index.unsubscribe(&plus, SubscriberId(1)));
            assert_eq!(index.node_count(), LEVELS + 1);
            // The literal chain goes with the index.
            drop(index);
        })
        .expect("spawn")
        .join()
        .expect("no stack overflow");
}

/// Filters over a small alphabet that makes collisions, empty levels and `$` levels likely.
fn filter_strategy() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "$x", "", "+"]);
    (
        prop::collection::vec(level, 0..4),
        any::<bool>(),
        prop::option::weighted(0.25, prop::sample::select(vec!["g1", "g2"])),
    )
        .prop_filter_map("valid filter", |(levels, hash, group)| {
            let mut f = levels.join("/");
            if hash || levels.is_empty() {
                if !levels.is_empty() {
                    f.push('/');
                }
                f.push('#');
            }
            if let Some(group) = group {
                f = format!("$share/{group}/{f}");
            }
            TopicFilter::new(&f).ok().map(|_| f)
        })
}

fn topic_strategy() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "$x", ""]);
    prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
}

proptest! {
    #[test]
    fn matches_equal_brute_force(
        subscriptions in prop::collection::vec((filter_strategy(), 0u64..4), 0..40),
        topics in prop::collection::vec(topic_strategy(), 1..20),
    ) {
        let index = SubscriptionIndex::new();
        let mut model = BTreeMap::new();
        for (f, id) in subscriptions {
            index.subscribe(&filter(&f), SubscriberId(id), f.clone());
            model.insert((f.clone(), id), f);
        }
        prop_assert_eq!(index.len(), model.len());
        for t in &topics {
            prop_assert_eq!(reached(&index, t), brute_force(&model, t), "topic {:?}", t);
        }
    }

    #[test]
    fn interleaved_subscribes_and_unsubscribes_follow_a_model(
        ops in prop::collection::vec((any::<bool>(), filter_strategy(), 0u64..3, 0u8..4), 0..80),
        topics in prop::collection::vec(topic_strategy(), 1..12),
    ) {
        let index = SubscriptionIndex::new();
        let mut model: BTreeMap<(String, u64), String> = BTreeMap::new();
        for (subscribe, f, id, version) in ops {
            let key = (f.clone(), id);
            if subscribe {
                let value = format!("{f} v{version}");
                let replaced = index.subscribe(&filter(&f), SubscriberId(id), value.clone());
                prop_assert_eq!(replaced, model.insert(key, value).is_some());
            } else {
                let removed = index.unsubscribe(&filter(&f), SubscriberId(id));
                prop_assert_eq!(removed, model.remove(&key).is_some());
            }
            prop_assert_eq!(index.len(), model.len());
        }
        for t in &topics {
            prop_assert_eq!(reached(&index, t), brute_force(&model, t), "topic {:?}", t);
        }
        for (f, id) in model.keys() {
            prop_assert!(index.unsubscribe(&filter(f), SubscriberId(*id)));
        }
        prop_assert!(index.is_empty());
        prop_assert_eq!(index.node_count(), 0);
        prop_assert_eq!(index.exact_filter_count(), 0);
    }
}

/// xorshift64: deterministic per thread, no dependency.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn concurrent_publishes_and_subscription_changes_end_in_the_model_state() {
    const FILTERS: [&str; 10] = [
        "dev/1/cmd",
        "dev/2/cmd",
        "dev/+/cmd",
        "dev/#",
        "+/1/cmd",
        "#",
        "site/a",
        "site/+",
        "$share/g/dev/+/cmd",
        "$share/g/dev/1/cmd",
    ];
    const TOPICS: [&str; 5] = ["dev/1/cmd", "dev/2/cmd", "site/a", "dev", "$SYS/x"];
    const STABLE: SubscriberId = SubscriberId(u64::MAX);

    let index = Arc::new(SubscriptionIndex::new());
    // Subscribed before anything runs and never removed: every publish must see them.
    index.subscribe(&filter("dev/1/cmd"), STABLE, "stable exact".to_string());
    index.subscribe(&filter("dev/+/cmd"), STABLE, "stable wildcard".to_string());
    let done = Arc::new(AtomicBool::new(false));

    let publishers: Vec<_> = (0..2)
        .map(|_| {
            let index = Arc::clone(&index);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !done.load(Ordering::Relaxed) || rounds == 0 {
                    let got = reached(&index, "dev/1/cmd");
                    let stable = got.direct.iter().filter(|(id, _)| *id == STABLE.0).count();
                    assert_eq!(stable, 2, "both stable subscriptions, once each");
                    let mut unique = got.direct.clone();
                    unique.dedup();
                    assert_eq!(unique, got.direct, "no subscription reported twice");
                    for t in TOPICS {
                        index.for_each_match(&topic(t), |matched| {
                            if let Matched::Shared(group) = matched {
                                let (id, _) =
                                    group.pick(|_| rounds.is_multiple_of(2)).expect("non-empty");
                                assert!(group.iter().any(|(member, _)| member == id));
                            }
                        });
                    }
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();

    let subscribers: Vec<_> = (0..3u64)
        .map(|thread| {
            let index = Arc::clone(&index);
            std::thread::spawn(move || {
                let mut model = BTreeMap::new();
                let mut state = 0x9E37_79B9_7F4A_7C15 ^ (thread + 1);
                for _ in 0..3_000 {
                    let r = next_random(&mut state);
                    let f = FILTERS[(r % FILTERS.len() as u64) as usize];
                    // Ids are disjoint per thread, so each thread's model is exact.
                    let id = thread * 100 + (r >> 8) % 4;
                    let key = (f.to_string(), id);
                    if (r >> 16).is_multiple_of(3) {
                        let removed = index.unsubscribe(&filter(f), SubscriberId(id));
                        assert_eq!(removed, model.remove(&key).is_some());
                    } else {
                        let value = format!("{f} {r}");
                        let replaced = index.subscribe(&filter(f), SubscriberId(id), value.clone());
                        assert_eq!(replaced, model.insert(key, value).is_some());
                    }
                }
                model
            })
        })
        .collect();

    let mut model = BTreeMap::new();
    for handle in subscribers {
        model.extend(handle.join().expect("subscriber thread"));
    }
    done.store(true, Ordering::Relaxed);
    for handle in publishers {
        assert!(handle.join().expect("publisher thread") > 0);
    }
    model.insert(
        ("dev/1/cmd".to_string(), STABLE.0),
        "stable exact".to_string(),
    );
    model.insert(
        ("dev/+/cmd".to_string(), STABLE.0),
        "stable wildcard".to_string(),
    );
    assert_eq!(index.len(), model.len());
    for t in TOPICS {
        assert_eq!(reached(&index, t), brute_force(&model, t), "topic {t}");
    }
}

#[test]
fn subscriptions_of_lists_every_filter_of_one_subscriber_with_its_full_text() {
    let index = SubscriptionIndex::new();
    let mine = [
        "a/b",
        "/leading/empty",
        "a/+/c",
        "#",
        "+/x/#",
        "a/#",
        "$share/g/a/+",
        "$share/h/exact",
        "$SYS/#",
    ];
    for f in mine {
        index.subscribe(&filter(f), SubscriberId(1), f.to_owned());
    }
    index.subscribe(&filter("a/b"), SubscriberId(2), "other".to_owned());
    index.subscribe(&filter("z/+"), SubscriberId(2), "other".to_owned());
    let mut found = Vec::new();
    index.subscriptions_of(SubscriberId(1), |text, value| {
        assert_eq!(&text, value, "the value stored under that filter");
        found.push(text);
    });
    found.sort();
    let mut want: Vec<String> = mine.iter().map(|f| (*f).to_owned()).collect();
    want.sort();
    assert_eq!(found, want);
    let mut others = Vec::new();
    index.subscriptions_of(SubscriberId(3), |text, _| others.push(text));
    assert!(others.is_empty());
}
