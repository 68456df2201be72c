//! Routing: which instances a call may go to, before the balancer picks.
//!
//! Two filters sit in front of any [`Balancer`](super::Balancer):
//!
//! 1. **Routing rules** (version routing, gray release), evaluated in order;
//!    the first that applies to a call decides its group of instances:
//!    - [`Rule::Match`]: calls carrying a metadata key (optionally with a
//!      given value) go to the instances a [`Selector`] matches;
//!    - [`Rule::Share`]: a share of the calls go to the matching instances,
//!      the rest to the others (gray release: `Share` of 0.1 to version 2
//!      sends 10% of traffic there whatever the instance count).
//!
//!    Together: `[Match { key: "x-canary", to: version 2 }, Share { to:
//!    version 2, share: 0.0 }]` sends only canary calls to version 2.
//!    When a rule's group has no instance that could take the call (none
//!    matches, or all are down), the call falls back to every instance: a
//!    routing rule shapes traffic; it never makes calls fail.
//! 2. **Zone preference**: among the instances left, those in the caller's
//!    zone are used while any of them can take the call; otherwise all.

use super::Member;

/// Which instances a routing rule sends calls to, by their metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    version: Option<String>,
    tags: Vec<String>,
    kv: Vec<(String, String)>,
}

impl Selector {
    /// Instances running this version.
    pub fn version(version: impl Into<String>) -> Selector {
        Selector { version: Some(version.into()), ..Selector::default() }
    }

    /// Instances carrying this tag.
    pub fn tag(tag: impl Into<String>) -> Selector {
        Selector { tags: vec![tag.into()], ..Selector::default() }
    }

    /// Also require this tag.
    pub fn and_tag(mut self, tag: impl Into<String>) -> Selector {
        self.tags.push(tag.into());
        self
    }

    /// Also require the metadata key/value `key=value`.
    pub fn and_kv(mut self, key: impl Into<String>, value: impl Into<String>) -> Selector {
        self.kv.push((key.into(), value.into()));
        self
    }

    /// Whether `member` matches.
    pub fn matches(&self, member: &Member) -> bool {
        let meta = &member.instance().metadata;
        self.version.as_ref().is_none_or(|v| &meta.version == v)
            && self.tags.iter().all(|t| meta.tags.contains(t))
            && self.kv.iter().all(|(k, v)| meta.kv.get(k) == Some(v))
    }
}

/// One routing rule (see the [`balance`](crate::balance) docs).
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Calls whose metadata has `key` (equal to `value`, if given) go to the
    /// instances `to` matches.
    Match {
        /// The call metadata key.
        key: String,
        /// The value it must have (`None`: any).
        value: Option<String>,
        /// Where such calls go.
        to: Selector,
    },
    /// `share` (0–1) of the calls reaching this rule go to the instances
    /// `to` matches, the others to the instances it does not match.
    Share {
        /// The instances that get the share.
        to: Selector,
        /// Their share of calls.
        share: f64,
    },
}

/// The group of instances a call was routed to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Group<'a> {
    /// No rule applied.
    All,
    /// Instances the selector matches.
    In(&'a Selector),
    /// Instances the selector does not match.
    NotIn(&'a Selector),
}

impl Group<'_> {
    pub(super) fn admits(&self, member: &Member) -> bool {
        match self {
            Group::All => true,
            Group::In(s) => s.matches(member),
            Group::NotIn(s) => !s.matches(member),
        }
    }
}

/// The group for a call with `metadata`, by the first rule that applies.
pub(super) fn route<'a>(rules: &'a [Rule], metadata: &[(String, String)]) -> Group<'a> {
    for rule in rules {
        match rule {
            Rule::Match { key, value, to } => {
                let carried = metadata.iter().any(|(k, v)| k == key && value.as_ref().is_none_or(|want| v == want));
                if carried {
                    return Group::In(to);
                }
            }
            Rule::Share { to, share } => {
                return if fastrand::f64() < *share { Group::In(to) } else { Group::NotIn(to) };
            }
        }
    }
    Group::All
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Instance;

    fn member(version: &str, tags: &[&str]) -> Member {
        let mut i = Instance::new("127.0.0.1:1");
        i.metadata.version = version.into();
        i.metadata.tags = tags.iter().map(|t| t.to_string()).collect();
        i.metadata.kv.insert("pool".into(), "blue".into());
        Member::for_test(i)
    }

    #[test]
    fn selectors_match_on_version_tags_and_key_values() {
        let v2 = member("2", &["canary"]);
        assert!(Selector::version("2").matches(&v2));
        assert!(!Selector::version("1").matches(&v2));
        assert!(Selector::tag("canary").and_kv("pool", "blue").matches(&v2));
        assert!(!Selector::tag("canary").and_tag("gpu").matches(&v2));
        assert!(!Selector::version("2").and_kv("pool", "green").matches(&v2));
        assert!(Selector::default().matches(&v2), "an empty selector matches all");
    }

    #[test]
    fn rules_apply_in_order() {
        let rules = vec![
            Rule::Match { key: "x-canary".into(), value: Some("1".into()), to: Selector::version("2") },
            Rule::Share { to: Selector::version("2"), share: 0.0 },
        ];
        let (v1, v2) = (member("1", &[]), member("2", &[]));
        let canary = [("x-canary".to_owned(), "1".to_owned())];
        let g = route(&rules, &canary);
        assert!(g.admits(&v2) && !g.admits(&v1));
        let other = [("x-canary".to_owned(), "0".to_owned())];
        for meta in [&other[..], &[]] {
            let g = route(&rules, meta);
            assert!(g.admits(&v1) && !g.admits(&v2), "only canary calls reach version 2");
        }
        assert!(matches!(route(&[], &canary), Group::All));
    }
}
