//! ACL files in mosquitto's syntax, and the per-client view the session checks.
//!
//! ```text
//! # lines before any `user` line apply to clients without a username
//! topic read public/#
//! user alice
//! topic readwrite sensors/#
//! topic deny sensors/secret
//! pattern write devices/%c/status      # every client; %c = client id, %u = username
//! ```
//!
//! `topic [read|write|readwrite|deny] <filter>` (no access word: readwrite) belongs to the
//! section it is in; `pattern ...` lines apply to every client, wherever they stand. The rules
//! follow mosquitto 2's acl_file (src/security_default.c):
//! - A client with a username uses that user's section (none if the file has no such section); a
//!   client without one uses the anonymous section. Pattern rules are checked after the section's
//!   rules.
//! - Within the section and within the patterns, `deny` rules are checked first. The first rule
//!   whose filter matches decides: `deny` refuses; a rule granting the wanted access allows; a
//!   matching rule without that access (`write` when reading) is passed over. No decision refuses.
//! - A topic starting with `$` matches only rules whose filter starts with `$`.
//! - Pattern rules refuse everything to a client whose username or client id contains `+` or `#`
//!   (such an id could widen a pattern); a pattern with `%u` is skipped for clients without one.
//!
//! Publishing checks the topic for `write`; delivering a message (live or retained) checks it for
//! `read`, as mosquitto does. mosquitto's acl_file grants every SUBSCRIBE and relies on that
//! delivery check alone; Starling also answers a SUBSCRIBE the client could never use with a
//! refusal (SUBACK 0x87 / 0x80). A subscription is granted when, in the same order, a rule's
//! filter *covers* the subscription's filter (matches every topic it can match, as mosquitto's
//! dynamic-security plugin decides): `topic read sensors/#` covers `sensors/+/t` but not `#`.
//! Partial overlaps are settled per message on delivery: with `topic read sensors/#` and
//! `topic deny sensors/secret`, a subscription to `sensors/#` is granted and never delivers
//! `sensors/secret`. Shared subscriptions are checked by their filter without `$share/<group>/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use thiserror::Error;

use crate::topic::{TopicFilter, filter_matches};

const READ: u8 = 1;
const WRITE: u8 = 2;
/// `deny`: no access.
const DENY: u8 = 0;

/// Why an ACL file could not be loaded.
#[derive(Debug, Error)]
pub enum AclError {
    #[error("cannot read acl file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("acl file {path} line {line}: {what}")]
    Invalid {
        path: PathBuf,
        line: usize,
        what: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    filter: Box<str>,
    access: u8,
}

impl Rule {
    /// Whether this rule decides a check: `Some(allowed)`, or `None` to go on.
    fn decide(&self, matched: bool, want: u8) -> Option<bool> {
        if !matched {
            None
        } else if self.access == DENY {
            Some(false)
        } else if self.access & want != 0 {
            Some(true)
        } else {
            None
        }
    }
}

/// Adds a rule with deny rules kept in front, so they are checked first.
fn push_rule(rules: &mut Vec<Rule>, rule: Rule) {
    if rule.access == DENY {
        rules.insert(0, rule);
    } else {
        rules.push(rule);
    }
}

/// A parsed ACL file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AclRules {
    anonymous: Arc<[Rule]>,
    users: HashMap<String, Arc<[Rule]>>,
    patterns: Vec<Rule>,
}

impl AclRules {
    /// Reads and parses an ACL file.
    pub fn load(path: &Path) -> Result<AclRules, AclError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Read {
            path: path.to_owned(),
            source,
        })?;
        AclRules::parse(&text).map_err(|(line, what)| AclError::Invalid {
            path: path.to_owned(),
            line,
            what,
        })
    }

    /// Parses ACL text; an error names the line (1-based) and what is wrong with it.
    pub fn parse(text: &str) -> Result<AclRules, (usize, String)> {
        let mut anonymous = Vec::new();
        let mut users: HashMap<String, Vec<Rule>> = HashMap::new();
        let mut patterns = Vec::new();
        let mut user: Option<String> = None;
        for (index, line) in text.lines().enumerate() {
            let fail = |what: String| (index + 1, what);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(fail("missing username".into()));
                    }
                    user = Some(rest.to_owned());
                    users.entry(rest.to_owned()).or_default();
                }
                "topic" | "pattern" => {
                    let (first, after) = split_word(rest);
                    if first.is_empty() {
                        return Err(fail(format!("empty {keyword}")));
                    }
                    let (access, filter) = if after.is_empty() {
                        (READ | WRITE, first)
                    } else {
                        let access = match first {
                            "read" => READ,
                            "write" => WRITE,
                            "readwrite" => READ | WRITE,
                            "deny" => DENY,
                            other => {
                                return Err(fail(format!("invalid access type {other:?}")));
                            }
                        };
                        (access, after)
                    };
                    TopicFilter::new(filter)
                        .map_err(|e| fail(format!("invalid topic filter {filter:?}: {e}")))?;
                    let rule = Rule {
                        filter: filter.into(),
                        access,
                    };
                    match (keyword, &user) {
                        ("pattern", _) => push_rule(&mut patterns, rule),
                        (_, Some(name)) => push_rule(users.entry(name.clone()).or_default(), rule),
                        (_, None) => push_rule(&mut anonymous, rule),
                    }
                }
                other => return Err(fail(format!("invalid line starting with {other:?}"))),
            }
        }
        Ok(AclRules {
            anonymous: anonymous.into(),
            users: users.into_iter().map(|(k, v)| (k, v.into())).collect(),
            patterns,
        })
    }

    /// The rules for one client, patterns resolved for its client id and username.
    fn for_client(&self, username: Option<&str>, client_id: &str) -> ClientRules {
        let own = match username {
            Some(name) => self.users.get(name).cloned(),
            None => Some(self.anonymous.clone()),
        };
        let dangerous = |s: &str| s.contains(['+', '#']);
        let has_patterns = !self.patterns.is_empty();
        let patterns = self
            .patterns
            .iter()
            .filter(|p| username.is_some() || !p.filter.contains("%u"))
            .map(|p| Rule {
                filter: substitute(&p.filter, client_id, username).into(),
                access: p.access,
            })
            .collect();
        ClientRules {
            own,
            has_patterns,
            dangerous: has_patterns && (dangerous(client_id) || username.is_some_and(dangerous)),
            patterns,
        }
    }
}

/// The first word of `s` and the rest, trimmed.
fn split_word(s: &str) -> (&str, &str) {
    match s.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (s, ""),
    }
}

/// Replaces `%c` with the client id and `%u` with the username (when there is one).
fn substitute(pattern: &str, client_id: &str, username: Option<&str>) -> String {
    let mut out = String::with_capacity(pattern.len() + client_id.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek(), username) {
            ('%', Some('c'), _) => {
                chars.next();
                out.push_str(client_id);
            }
            ('%', Some('u'), Some(user)) => {
                chars.next();
                out.push_str(user);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Whether an ACL filter matches a topic, with the `$` rule.
fn topic_matches(acl: &str, topic: &str) -> bool {
    (acl.starts_with('$') || !topic.starts_with('$')) && filter_matches(acl, topic)
}

/// Whether an ACL filter matches every topic a subscription filter can match.
fn covers(acl: &str, sub: &str) -> bool {
    if sub.starts_with('$') && !acl.starts_with('$') {
        return false;
    }
    let (acl_levels, acl_hash) = without_hash(acl);
    let (sub_levels, sub_hash) = without_hash(sub);
    if sub_hash && !acl_hash {
        return false;
    }
    let acl_levels: Vec<&str> = acl_levels.collect();
    let mut sub_levels = sub_levels;
    for level in &acl_levels {
        match sub_levels.next() {
            Some(s) if *level == "+" || *level == s => {}
            _ => return false,
        }
    }
    // Extra subscription levels are covered only by a trailing `#`.
    acl_hash || sub_levels.next().is_none()
}

/// The levels of a filter before a trailing `#`, and whether it had one. `#` alone has none.
fn without_hash(filter: &str) -> (std::iter::Take<std::str::Split<'_, char>>, bool) {
    let count = filter.split('/').count();
    let hash = filter == "#" || filter.ends_with("/#");
    let levels = filter.split('/').take(if hash { count - 1 } else { count });
    (levels, hash)
}

/// One client's rules, ready to check without allocating.
#[derive(Debug)]
struct ClientRules {
    /// Its section: the user's, or the anonymous one; `None` when the user has no section.
    own: Option<Arc<[Rule]>>,
    has_patterns: bool,
    /// Its username or client id contains a wildcard, which pattern rules refuse outright.
    dangerous: bool,
    patterns: Vec<Rule>,
}

impl ClientRules {
    fn check(&self, want: u8, matches: impl Fn(&str) -> bool) -> bool {
        if self.own.is_none() && !self.has_patterns {
            return false;
        }
        for rule in self.own.iter().flat_map(|rules| rules.iter()) {
            if let Some(allowed) = rule.decide(matches(&rule.filter), want) {
                return allowed;
            }
        }
        if self.dangerous {
            return false;
        }
        for rule in &self.patterns {
            if let Some(allowed) = rule.decide(matches(&rule.filter), want) {
                return allowed;
            }
        }
        false
    }
}

/// An ACL file as the broker holds it: replaced on reload, with a generation counter that lets
/// every client's [`Access`] notice the change with one atomic load.
#[derive(Debug)]
pub struct AclSource {
    path: PathBuf,
    generation: AtomicU64,
    rules: RwLock<Arc<AclRules>>,
}

impl AclSource {
    pub fn load(path: &Path) -> Result<AclSource, AclError> {
        Ok(AclSource {
            path: path.to_owned(),
            generation: AtomicU64::new(0),
            rules: RwLock::new(Arc::new(AclRules::load(path)?)),
        })
    }

    /// Reads the file again; on error the rules in force stay.
    pub fn reload(&self) -> Result<(), AclError> {
        let rules = AclRules::load(&self.path)?;
        *self.rules.write() = Arc::new(rules);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What one connected client may do: everything when no ACL file is configured, else what its
/// rules allow. Lives in the session's connection state; checks are pure computation plus one
/// atomic load that picks up a reloaded file.
#[derive(Debug, Default)]
pub struct Access(Option<Box<Restricted>>);

#[derive(Debug)]
struct Restricted {
    source: Arc<AclSource>,
    generation: u64,
    username: Option<Arc<str>>,
    client_id: Arc<str>,
    rules: ClientRules,
}

impl Access {
    /// No ACL: every topic may be published and subscribed to.
    pub fn unrestricted() -> Access {
        Access(None)
    }

    /// The access of a client under the rules of `source`.
    pub fn restricted(
        source: Arc<AclSource>,
        username: Option<Arc<str>>,
        client_id: Arc<str>,
    ) -> Access {
        let generation = source.generation.load(Ordering::Acquire);
        let rules = source
            .rules
            .read()
            .for_client(username.as_deref(), &client_id);
        Access(Some(Box::new(Restricted {
            source,
            generation,
            username,
            client_id,
            rules,
        })))
    }

    /// Whether the client may publish to `topic`.
    pub fn can_publish(&mut self, topic: &str) -> bool {
        self.check(WRITE, |acl| topic_matches(acl, topic))
    }

    /// Whether a message on `topic` may be delivered to the client.
    pub fn can_receive(&mut self, topic: &str) -> bool {
        self.check(READ, |acl| topic_matches(acl, topic))
    }

    /// Whether the client may subscribe to `filter` (see the module documentation).
    pub fn can_subscribe(&mut self, filter: &TopicFilter) -> bool {
        let filter = filter.filter();
        self.check(READ, |acl| covers(acl, filter))
    }

    fn check(&mut self, want: u8, matches: impl Fn(&str) -> bool) -> bool {
        let Some(restricted) = &mut self.0 else {
            return true;
        };
        let now = restricted.source.generation.load(Ordering::Acquire);
        if now != restricted.generation {
            restricted.rules = restricted
                .source
                .rules
                .read()
                .for_client(restricted.username.as_deref(), &restricted.client_id);
            restricted.generation = now;
        }
        restricted.rules.check(want, matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> AclRules {
        AclRules::parse(text).expect("valid acl")
    }

    fn client(rules: &AclRules, user: Option<&str>, id: &str) -> ClientRules {
        rules.for_client(user, id)
    }

    fn can(c: &ClientRules, want: u8, topic: &str) -> bool {
        c.check(want, |acl| topic_matches(acl, topic))
    }

    fn can_sub(c: &ClientRules, filter: &str) -> bool {
        c.check(READ, |acl| covers(acl, filter))
    }

    #[test]
    fn sections_access_words_and_deny_first() {
        let acl = rules(
            "# anonymous\ntopic read public/#\n\nuser alice\ntopic sensors/#\n\
             topic deny sensors/secret\ntopic write cmd/#\nuser bob\ntopic read  spaced topic \n",
        );
        let anon = client(&acl, None, "a");
        assert!(can(&anon, READ, "public/x"));
        assert!(!can(&anon, WRITE, "public/x"));
        assert!(!can(&anon, READ, "sensors/t"));

        let alice = client(&acl, Some("alice"), "a");
        assert!(can(&alice, READ, "sensors/t") && can(&alice, WRITE, "sensors/t"));
        assert!(!can(&alice, READ, "sensors/secret"), "deny comes first");
        assert!(!can(&alice, WRITE, "sensors/secret"));
        assert!(can(&alice, WRITE, "cmd/x") && !can(&alice, READ, "cmd/x"));
        assert!(
            !can(&alice, READ, "public/x"),
            "the anonymous section is not hers"
        );

        let bob = client(&acl, Some("bob"), "b");
        assert!(can(&bob, READ, "spaced topic"), "topics may contain spaces");
        let nobody = client(&acl, Some("carol"), "c");
        assert!(
            !can(&nobody, READ, "public/x"),
            "a user without a section gets nothing"
        );
    }

    #[test]
    fn patterns_substitute_client_id_and_username() {
        let acl = rules(
            "pattern readwrite devices/%c/#\npattern read users/%u/inbox\n\
             pattern deny devices/%c/locked\n",
        );
        let dev = client(&acl, Some("alice"), "dev1");
        assert!(can(&dev, WRITE, "devices/dev1/status"));
        assert!(!can(&dev, WRITE, "devices/dev2/status"));
        assert!(!can(&dev, WRITE, "devices/dev1/locked"));
        assert!(can(&dev, READ, "users/alice/inbox"));
        assert!(!can(&dev, READ, "users/bob/inbox"));
        // Patterns apply to users without a section and to anonymous clients.
        let anon = client(&acl, None, "dev3");
        assert!(can(&anon, READ, "devices/dev3/x"));
        assert!(
            !can(&anon, READ, "users/%u/inbox"),
            "%u patterns skip anonymous clients"
        );
        // A wildcard in the id would widen the pattern: refused outright.
        let sneaky = client(&acl, None, "#");
        assert!(!can(&sneaky, READ, "devices/anything"));
        let sneaky_user = client(&acl, Some("+"), "ok");
        assert!(!can(&sneaky_user, READ, "devices/ok/x"));
    }

    #[test]
    fn section_rules_decide_before_patterns() {
        let acl = rules("user alice\ntopic deny devices/#\npattern readwrite devices/%c/#\n");
        let alice = client(&acl, Some("alice"), "d1");
        assert!(!can(&alice, WRITE, "devices/d1/x"), "her deny wins");
        let bob = client(&acl, Some("bob"), "d1");
        assert!(can(&bob, WRITE, "devices/d1/x"));
    }

    #[test]
    fn dollar_topics_need_dollar_rules() {
        let acl = rules("topic readwrite #\ntopic read $SYS/#\n");
        let anon = client(&acl, None, "a");
        assert!(can(&anon, READ, "a/b"));
        assert!(!can(&anon, WRITE, "$SYS/x"));
        assert!(can(&anon, READ, "$SYS/x"));
        assert!(!can_sub(&anon, "$other/#"));
        assert!(can_sub(&anon, "$SYS/broker/#"));
    }

    #[test]
    fn a_rule_covers_a_subscription_only_if_it_matches_all_it_can_match() {
        let table = [
            ("#", "a/b", true),
            ("#", "#", true),
            ("a/#", "a", true),
            ("a/#", "a/#", true),
            ("a/#", "a/+/c", true),
            ("a/#", "#", false),
            ("a/#", "b/#", false),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/#", false),
            ("a/+", "a/b/c", false),
            ("a/b", "a/+", false),
            ("a/b", "a/b", true),
            ("a/+/#", "a/#", false),
            ("a/+/#", "a/b/#", true),
            ("+/+", "a/b", true),
            ("+", "a/b", false),
            ("a/b/#", "a/b", true),
        ];
        for (acl, sub, want) in table {
            assert_eq!(covers(acl, sub), want, "acl {acl} sub {sub}");
        }
    }

    #[test]
    fn subscriptions_are_granted_by_covering_read_rules() {
        let acl = rules(
            "topic read sensors/#\ntopic deny sensors/secret\ntopic write cmd/#\n\
             topic deny nosub/#\ntopic read #\n",
        );
        let anon = client(&acl, None, "a");
        assert!(
            can_sub(&anon, "sensors/#"),
            "partial deny is settled on delivery"
        );
        assert!(!can_sub(&anon, "sensors/secret"), "covered by a deny");
        assert!(
            can_sub(&anon, "cmd/x"),
            "write-only rule passed over, # grants"
        );
        assert!(!can_sub(&anon, "nosub/a"));
        let strict = rules("topic read sensors/+/t\ntopic write cmd/#\n");
        let c = client(&strict, None, "a");
        assert!(can_sub(&c, "sensors/+/t") && can_sub(&c, "sensors/x/t"));
        assert!(!can_sub(&c, "sensors/#"), "wider than the rule");
        assert!(!can_sub(&c, "cmd/#"), "write only");
    }

    #[test]
    fn bad_lines_are_refused_with_their_line_number() {
        for (text, line) in [
            ("topic\n", 1),
            ("\ntopic readonly a/b\n", 2),
            ("user\n", 1),
            ("topic read a/#/b\n", 1),
            ("# ok\nsubscribe a\n", 2),
        ] {
            let err = AclRules::parse(text).expect_err(text);
            assert_eq!(err.0, line, "{text}: {}", err.1);
        }
        assert_eq!(rules(""), AclRules::default(), "empty is valid");
    }

    #[test]
    fn an_empty_file_denies_everything() {
        let acl = rules("");
        let anon = client(&acl, None, "a");
        assert!(!can(&anon, READ, "a") && !can(&anon, WRITE, "a"));
        assert!(!can(&client(&acl, Some("u"), "a"), READ, "a"));
    }

    #[test]
    fn access_follows_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("acl");
        std::fs::write(&path, "topic read a\n").expect("write");
        let source = Arc::new(AclSource::load(&path).expect("loads"));
        let mut access = Access::restricted(source.clone(), None, "c".into());
        assert!(access.can_receive("a") && !access.can_receive("b"));
        std::fs::write(&path, "topic read b\n").expect("write");
        source.reload().expect("reloads");
        assert!(!access.can_receive("a") && access.can_receive("b"));
        std::fs::write(&path, "topic bogus b\n").expect("write");
        assert!(source.reload().is_err());
        assert!(
            access.can_receive("b"),
            "a failed reload keeps the rules in force"
        );
        assert!(Access::unrestricted().can_publish("anything"));
    }
}
