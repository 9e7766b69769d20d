//! The rule set as CEL data: the engine's own lookup tables, written as CEL
//! literals that the decision program ([`super::program`]) reads.
//!
//! Layer: pure core. Nothing is re-derived here: the buckets, their order
//! and the mirror set come from [`RuleSet::index`], the ranks from
//! [`specificity_of_bucket`], so the policy searches what the engine
//! searches, in the order it searches.

use std::collections::BTreeMap;

use super::cel;
use crate::rules::{specificity_of_bucket, BucketKind, DigestPolicy, RuleSet, Transform};

/// Candidates are `rank * RULE_SLOTS + rule index`, so that one integer
/// carries both and a list of them keeps the engine's order.
pub const RULE_SLOTS: i64 = 100_000;
/// Ranks are `tier * 10^8 + a * 10^4 + b` (see [`rank`]).
pub const TIER_SCALE: i64 = 100_000_000;
/// The rank of the first exact-host match: aliases are tried below it.
pub const EXACT_TIER_RANK: i64 = 3 * TIER_SCALE;

/// Transform kinds as the program numbers them.
pub const KIND_HOST: i64 = 0;
pub const KIND_PREFIX: i64 = 1;
pub const KIND_FULL_REFERENCE: i64 = 2;
pub const KIND_FLATTEN: i64 = 3;
pub const KIND_JOIN: i64 = 4;
pub const KIND_RENAME: i64 = 5;
pub const KIND_KEEP: i64 = 6;

/// Digest policies as the program numbers them.
pub const DIGESTS_KEEP: i64 = 0;
pub const DIGESTS_DROP: i64 = 1;
pub const DIGESTS_SKIP: i64 = 2;
pub const DIGESTS_REQUIRE: i64 = 3;

/// The engine's `(tier, a, b)` rank as one integer that orders the same.
pub fn rank(bucket: BucketKind, key: &str) -> i64 {
    let (tier, a, b) = specificity_of_bucket(bucket, key);
    i64::from(tier) * TIER_SCALE + (a.min(9_999) as i64) * 10_000 + b.min(9_999) as i64
}

/// The tables of one rule set, each a CEL expression, by variable name.
/// Tables the rule set does not need are absent, and the program leaves
/// out the steps that would read them.
#[derive(Debug, Default)]
pub struct Tables {
    pub entries: Vec<(&'static str, String)>,
}

impl Tables {
    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|(n, _)| *n == name)
    }

    fn push(&mut self, name: &'static str, expression: String) {
        self.entries.push((name, expression));
    }
}

fn bucket_map(
    buckets: &foldhash::HashMap<String, Vec<usize>>,
    kind: BucketKind,
) -> BTreeMap<String, Vec<i64>> {
    buckets
        .iter()
        .map(|(key, ids)| {
            let r = rank(kind, key);
            let cands = ids.iter().map(|&id| r * RULE_SLOTS + id as i64).collect();
            (key.clone(), cands)
        })
        .collect()
}

fn write_bucket_map(map: &BTreeMap<String, Vec<i64>>) -> String {
    cel::map(map.iter().map(|(k, v)| (cel::string(k), cel::int_list(v))))
}

/// Builds the tables; `names` are the rule names as JSON strings (for the
/// audit annotation).
pub fn build(rules: &RuleSet, placeholders: &[String]) -> Tables {
    let index = rules.index();
    let mut t = Tables::default();
    if !placeholders.is_empty() {
        t.push("placeholders", cel::string_set(placeholders));
    }
    if !index.mirrors.is_empty() {
        let mut mirrors: Vec<&str> = index.mirrors.iter().map(String::as_str).collect();
        mirrors.sort_unstable();
        t.push("mirrors", cel::string_set(mirrors));
    }
    let skip = rules.skip();
    let mut skip_exact: Vec<&str> = skip.exact_keys().collect();
    let mut skip_prefix: Vec<&str> = skip.prefix_keys().collect();
    skip_exact.sort_unstable();
    skip_prefix.sort_unstable();
    if !skip_exact.is_empty() {
        t.push("skipExact", cel::string_set(skip_exact));
    }
    if !skip_prefix.is_empty() {
        t.push("skipPrefix", cel::string_set(skip_prefix));
    }
    for (name, buckets, kind) in [
        ("renames", index.renames, BucketKind::Rename),
        ("exact", index.exact, BucketKind::Exact),
        ("subdomains", index.subdomains, BucketKind::Subdomain),
    ] {
        if !buckets.is_empty() {
            t.push(name, write_bucket_map(&bucket_map(buckets, kind)));
        }
    }
    if !index.any.is_empty() {
        let r = rank(BucketKind::Any, "*");
        let cands: Vec<i64> = index
            .any
            .iter()
            .map(|&id| r * RULE_SLOTS + id as i64)
            .collect();
        t.push("any", cel::int_list(&cands));
    }
    if !index.aliases.is_empty() {
        let aliases: BTreeMap<&str, usize> = index
            .aliases
            .iter()
            .map(|(k, &i)| (k.as_str(), i))
            .collect();
        let list = rules.aliases();
        t.push(
            "aliases",
            cel::map(aliases.into_iter().map(|(k, i)| {
                let to = &list[i].to;
                (cel::string(k), cel::string_list([&to.domain, &to.path]))
            })),
        );
    }
    // Per rule, by index: kind, [target domain, target path, source path, token], digests.
    let all = rules.rules();
    let kinds: Vec<i64> = all.iter().map(|r| kind_number(&r.transform)).collect();
    t.push("kinds", cel::int_list(&kinds));
    t.push(
        "targets",
        cel::list(all.iter().map(|r| {
            let target = r.transform.target().unwrap_or_default_prefix();
            let token = match &r.transform {
                Transform::Join { token, .. } => token.as_str(),
                _ => "",
            };
            cel::string_list([
                target.0.as_str(),
                target.1.as_str(),
                r.source.path.as_str(),
                token,
            ])
        })),
    );
    if all.iter().any(|r| r.digests != DigestPolicy::Keep) {
        let digests: Vec<i64> = all.iter().map(|r| digest_number(r.digests)).collect();
        t.push("digests", cel::int_list(&digests));
    }
    // The rule names, JSON-encoded, for the audit annotation.
    t.push(
        "names",
        cel::string_list(
            all.iter()
                .map(|r| serde_json::to_string(&r.name).unwrap_or_else(|_| "\"\"".to_string())),
        ),
    );
    // Per-rule allow and skip lists, keyed `index|repository`.
    let mut allow_rules = Vec::new();
    let (mut allow_exact, mut allow_prefix, mut skip_exact, mut skip_prefix) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, r) in all.iter().enumerate() {
        if !r.allow.is_empty() {
            allow_rules.push(i as i64);
            allow_exact.extend(r.allow.exact_keys().map(|k| format!("{i}|{k}")));
            allow_prefix.extend(r.allow.prefix_keys().map(|k| format!("{i}|{k}")));
        }
        skip_exact.extend(r.skip.exact_keys().map(|k| format!("{i}|{k}")));
        skip_prefix.extend(r.skip.prefix_keys().map(|k| format!("{i}|{k}")));
    }
    if !allow_rules.is_empty() {
        t.push(
            "allowRules",
            cel::map(
                allow_rules
                    .iter()
                    .map(|i| (i.to_string(), "true".to_string())),
            ),
        );
        for (name, mut keys) in [("allowExact", allow_exact), ("allowPrefix", allow_prefix)] {
            if !keys.is_empty() {
                keys.sort_unstable();
                t.push(name, cel::string_set(keys));
            }
        }
    }
    for (name, mut keys) in [
        ("ruleSkipExact", skip_exact),
        ("ruleSkipPrefix", skip_prefix),
    ] {
        if !keys.is_empty() {
            keys.sort_unstable();
            t.push(name, cel::string_set(keys));
        }
    }
    t
}

trait TargetParts {
    fn unwrap_or_default_prefix(self) -> (String, String);
}

impl TargetParts for Option<crate::rules::RepoPrefix> {
    fn unwrap_or_default_prefix(self) -> (String, String) {
        self.map(|t| (t.domain, t.path)).unwrap_or_default()
    }
}

fn kind_number(t: &Transform) -> i64 {
    match t {
        Transform::Host(_) => KIND_HOST,
        Transform::Prefix(_) => KIND_PREFIX,
        Transform::FullReference(_) => KIND_FULL_REFERENCE,
        Transform::Flatten(_) => KIND_FLATTEN,
        Transform::Join { .. } => KIND_JOIN,
        Transform::Rename(_) => KIND_RENAME,
        Transform::Keep => KIND_KEEP,
    }
}

fn digest_number(d: DigestPolicy) -> i64 {
    match d {
        DigestPolicy::Keep => DIGESTS_KEEP,
        DigestPolicy::Drop => DIGESTS_DROP,
        DigestPolicy::Skip => DIGESTS_SKIP,
        DigestPolicy::Require => DIGESTS_REQUIRE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn ranks_order_as_the_engine_does() {
        let rename = rank(BucketKind::Rename, "gcr.io/a/b");
        let deep = rank(BucketKind::Exact, "gcr.io/a/b");
        let shallow = rank(BucketKind::Exact, "gcr.io/a");
        let host = rank(BucketKind::Exact, "gcr.io");
        let sub_long = rank(BucketKind::Subdomain, "eu.gcr.io");
        let sub_short_deep = rank(BucketKind::Subdomain, "gcr.io/a");
        let any = rank(BucketKind::Any, "*");
        let order = [rename, deep, shallow, host, sub_long, sub_short_deep, any];
        assert!(order.windows(2).all(|w| w[0] > w[1]), "{order:?}");
        assert!(host >= EXACT_TIER_RANK && sub_long < EXACT_TIER_RANK);
    }

    #[test]
    fn only_needed_tables_are_written() {
        let config = Config::from_yaml(
            "rules: [{source: quay.io, kind: host, target: quay.m.daocloud.io}]",
            "test",
        )
        .unwrap();
        let t = build(&config.rules, &["auto".into()]);
        let names: Vec<&str> = t.entries.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "placeholders",
                "mirrors",
                "exact",
                "kinds",
                "targets",
                "names"
            ]
        );
        let exact = &t.entries[2].1;
        assert_eq!(
            exact,
            &format!(
                "{{\"quay.io\": [{}]}}",
                rank(BucketKind::Exact, "quay.io") * RULE_SLOTS
            )
        );
    }
}
