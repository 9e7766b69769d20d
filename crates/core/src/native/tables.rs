//! The rule set as CEL data: the engine's own lookup tables, written as CEL
//! literals that the decision program ([`super::program`]) reads.
//!
//! Layer: pure core. Nothing is re-derived here: the buckets, their order
//! and the mirror set come from [`RuleSet::index`], the ranks from
//! [`specificity_of_bucket`], so the policy searches what the engine
//! searches, in the order it searches.

use std::collections::BTreeMap;

use super::cel;
use crate::rules::{specificity_of_bucket, BucketKind, DigestPolicy, Rule, RuleSet, Transform};

/// Candidates are `rank * RULE_SLOTS + (RULE_SLOTS - 1 - rule index)`: one
/// integer carries both, and of the rules that cover an image the one the
/// engine tries first is the largest (higher rank, then earlier rule). Every
/// candidate has 14 digits, so their decimal strings order as they do.
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

/// One covering rule of rank `rank` (see [`RULE_SLOTS`]).
pub fn candidate(rank: i64, id: usize) -> i64 {
    rank * RULE_SLOTS + (RULE_SLOTS - 1 - id as i64)
}

/// The engine's `(tier, a, b)` rank as one integer that orders the same.
pub fn rank(bucket: BucketKind, key: &str) -> i64 {
    let (tier, a, b) = specificity_of_bucket(bucket, key);
    i64::from(tier) * TIER_SCALE + (a.min(9_999) as i64) * 10_000 + b.min(9_999) as i64
}

/// A table's literal is cut into variables of at most this many code
/// points (the CEL parser takes 100,000 per expression).
pub const CHUNK_CODE_POINTS: usize = 90_000;

/// The tables of one rule set, each a CEL expression, by variable name.
/// Tables the rule set does not need are absent, and the program leaves
/// out the steps that would read them.
#[derive(Debug, Default)]
pub struct Tables {
    pub entries: Vec<(String, String)>,
    /// How many variables each table was cut into (`name`, `name1`, ...).
    chunks: Vec<(&'static str, usize)>,
    /// For lists cut into variables: the index each variable starts at.
    list_starts: Vec<(&'static str, Vec<usize>)>,
    /// The most path components of any key that is looked up by prefix
    /// (mirrors, exact hosts, subdomains, aliases, skip and allow
    /// prefixes): an image's prefixes deeper than this cannot match, so the
    /// program never builds them.
    pub max_depth: usize,
    /// The transform kinds the rules use (the program tests only these).
    pub kinds: Vec<i64>,
    /// Does any rule have a digest policy other than keep?
    pub digest_policies: bool,
    /// Does any rule send images to Docker Hub (where `library/` applies)?
    pub docker_hub_targets: bool,
}

impl Tables {
    pub fn has(&self, name: &str) -> bool {
        self.chunks.iter().any(|(n, _)| *n == name)
    }

    fn variables(&self, name: &str) -> Vec<String> {
        let count = self
            .chunks
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |c| c.1);
        (0..count)
            .map(|i| {
                if i == 0 {
                    format!("variables.{name}")
                } else {
                    format!("variables.{name}{i}")
                }
            })
            .collect()
    }

    /// `key in table`, over every variable of the table.
    pub fn contains(&self, name: &str, key: &str) -> String {
        let parts: Vec<String> = self
            .variables(name)
            .iter()
            .map(|v| format!("{key} in {v}"))
            .collect();
        if parts.is_empty() {
            "false".into()
        } else {
            format!("({})", parts.join(" || "))
        }
    }

    /// `table[key]`, or `absent` when no variable of the table has the key.
    pub fn get(&self, name: &str, key: &str, absent: &str) -> String {
        let mut out = String::from("(");
        for v in self.variables(name) {
            out.push_str(&format!("{key} in {v} ? {v}[{key}] : "));
        }
        out.push_str(absent);
        out.push(')');
        out
    }

    /// `list[index]` of a list cut into variables.
    pub fn index(&self, name: &str, index: &str) -> String {
        let starts = self
            .list_starts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        let vars = self.variables(name);
        let mut out = String::from("(");
        // From the last variable down: the first whose start is <= index.
        for i in (1..vars.len()).rev() {
            out.push_str(&format!(
                "{index} >= {start} ? {v}[{index} - {start}] : ",
                start = starts[i],
                v = vars[i]
            ));
        }
        out.push_str(&format!(
            "{}[{index}])",
            vars.first().cloned().unwrap_or_default()
        ));
        out
    }

    /// A map literal, cut into variables of at most [`CHUNK_CODE_POINTS`].
    fn push_map(&mut self, name: &'static str, entries: Vec<(String, String)>) {
        let (chunks, _) = cut(entries, |(k, v)| k.chars().count() + v.chars().count() + 4);
        self.push_chunks(name, chunks.into_iter().map(cel::map).collect());
    }

    /// A list literal, cut likewise; [`Tables::index`] reads it.
    fn push_list(&mut self, name: &'static str, items: Vec<String>) {
        let (chunks, starts) = cut(items, |item| item.chars().count() + 2);
        self.list_starts.push((name, starts));
        self.push_chunks(name, chunks.into_iter().map(cel::list).collect());
    }

    fn push_chunks(&mut self, name: &'static str, literals: Vec<String>) {
        self.chunks.push((name, literals.len()));
        for (i, literal) in literals.into_iter().enumerate() {
            let var = if i == 0 {
                name.to_string()
            } else {
                format!("{name}{i}")
            };
            self.entries.push((var, literal));
        }
    }

    fn deepen<'k>(&mut self, keys: impl IntoIterator<Item = &'k str>) {
        for key in keys {
            self.max_depth = self.max_depth.max(key.matches('/').count());
        }
    }

    fn push(&mut self, name: &'static str, expression: String) {
        self.push_chunks(name, vec![expression]);
    }

    fn push_set<I, S>(&mut self, name: &'static str, keys: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let entries = keys
            .into_iter()
            .map(|k| (cel::string(k.as_ref()), "true".to_string()))
            .collect();
        self.push_map(name, entries);
    }
}

/// `items` in runs whose literal stays under [`CHUNK_CODE_POINTS`] (an item
/// longer than that is a run of its own), with the index each run starts at.
fn cut<T>(items: Vec<T>, len: impl Fn(&T) -> usize) -> (Vec<Vec<T>>, Vec<usize>) {
    let mut chunks: Vec<Vec<T>> = vec![Vec::new()];
    let mut starts = vec![0];
    let mut size = 0;
    for (i, item) in items.into_iter().enumerate() {
        let item_len = len(&item);
        if size + item_len > CHUNK_CODE_POINTS && !chunks.last().is_some_and(Vec::is_empty) {
            chunks.push(Vec::new());
            starts.push(i);
            size = 0;
        }
        size += item_len;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(item);
        }
    }
    (chunks, starts)
}

/// One covering rule as the program reads it, a list of strings:
/// `[candidate, kind, target domain, target path, target path + '/' (or ''),
/// source path, token, digests, rule index]` (the `ENTRY_*` indexes).
fn entry(rules: &[Rule], rank: i64, id: usize) -> String {
    let rule = &rules[id];
    let (domain, path) = rule
        .transform
        .target()
        .map(|t| (t.domain, t.path))
        .unwrap_or_default();
    let token = match &rule.transform {
        Transform::Join { token, .. } => token.as_str(),
        _ => "",
    };
    let slashed = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    cel::string_list([
        candidate(rank, id).to_string().as_str(),
        &kind_number(&rule.transform).to_string(),
        &domain,
        &path,
        &slashed,
        &rule.source.path,
        token,
        &digest_number(rule.digests).to_string(),
        &id.to_string(),
    ])
}

pub const ENTRY_CANDIDATE: usize = 0;
pub const ENTRY_KIND: usize = 1;
pub const ENTRY_DOMAIN: usize = 2;
pub const ENTRY_PATH: usize = 3;
pub const ENTRY_PATH_SLASH: usize = 4;
pub const ENTRY_SOURCE_PATH: usize = 5;
pub const ENTRY_TOKEN: usize = 6;
pub const ENTRY_DIGESTS: usize = 7;
pub const ENTRY_INDEX: usize = 8;

/// `{key: [entry, ...]}` entries, each bucket in the order the engine tries it.
fn bucket_entries(
    rules: &[Rule],
    buckets: &foldhash::HashMap<String, Vec<usize>>,
    kind: BucketKind,
) -> Vec<(String, String)> {
    let sorted: BTreeMap<&String, &Vec<usize>> = buckets.iter().collect();
    sorted
        .into_iter()
        .map(|(key, ids)| {
            let r = rank(kind, key);
            (
                cel::string(key),
                cel::list(ids.iter().map(|&id| entry(rules, r, id))),
            )
        })
        .collect()
}

/// Builds the tables of `rules`, with `placeholders` (sorted) as a set.
pub fn build(rules: &RuleSet, placeholders: &[String]) -> Tables {
    let index = rules.index();
    let mut t = Tables::default();
    if !placeholders.is_empty() {
        t.push_set("placeholders", placeholders);
    }
    t.deepen(index.mirrors.iter().map(String::as_str));
    t.deepen(index.exact.keys().map(String::as_str));
    t.deepen(index.subdomains.keys().map(String::as_str));
    t.deepen(index.aliases.keys().map(String::as_str));
    t.deepen(rules.skip().prefix_keys());
    for r in rules.rules() {
        t.deepen(r.allow.prefix_keys());
        t.deepen(r.skip.prefix_keys());
    }
    if !index.mirrors.is_empty() {
        let mut mirrors: Vec<&str> = index.mirrors.iter().map(String::as_str).collect();
        mirrors.sort_unstable();
        t.push_set("mirrors", mirrors);
    }
    let skip = rules.skip();
    let mut skip_exact: Vec<&str> = skip.exact_keys().collect();
    let mut skip_prefix: Vec<&str> = skip.prefix_keys().collect();
    skip_exact.sort_unstable();
    skip_prefix.sort_unstable();
    if !skip_exact.is_empty() {
        t.push_set("skipExact", skip_exact);
    }
    if !skip_prefix.is_empty() {
        t.push_set("skipPrefix", skip_prefix);
    }
    let all = rules.rules();
    for (name, buckets, kind) in [
        ("renames", index.renames, BucketKind::Rename),
        ("exact", index.exact, BucketKind::Exact),
        ("subdomains", index.subdomains, BucketKind::Subdomain),
    ] {
        if !buckets.is_empty() {
            t.push_map(name, bucket_entries(all, buckets, kind));
        }
    }
    if !index.any.is_empty() {
        let r = rank(BucketKind::Any, "*");
        t.push(
            "any",
            cel::list(index.any.iter().map(|&id| entry(all, r, id))),
        );
    }
    t.kinds = all.iter().map(|r| kind_number(&r.transform)).collect();
    t.kinds.sort_unstable();
    t.kinds.dedup();
    t.digest_policies = all.iter().any(|r| r.digests != DigestPolicy::Keep);
    t.docker_hub_targets = all.iter().any(|r| {
        r.transform
            .target()
            .is_some_and(|t| t.domain == crate::reference::DOCKER_HUB)
    });
    if !index.aliases.is_empty() {
        let aliases: BTreeMap<&str, usize> = index
            .aliases
            .iter()
            .map(|(k, &i)| (k.as_str(), i))
            .collect();
        let list = rules.aliases();
        t.push_map(
            "aliases",
            aliases
                .into_iter()
                .map(|(k, i)| {
                    let to = &list[i].to;
                    (cel::string(k), cel::string_list([&to.domain, &to.path]))
                })
                .collect(),
        );
    }
    // The rule names, JSON-encoded, for the audit annotation.
    t.push_list(
        "names",
        all.iter()
            .map(|r| {
                cel::string(&serde_json::to_string(&r.name).unwrap_or_else(|_| "\"\"".to_string()))
            })
            .collect(),
    );
    // Per-rule allow and skip lists, keyed `index|repository`.
    let mut allow_rules: Vec<i64> = Vec::new();
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
        t.push_set("allowRules", allow_rules.iter().map(i64::to_string));
        for (name, mut keys) in [("allowExact", allow_exact), ("allowPrefix", allow_prefix)] {
            if !keys.is_empty() {
                keys.sort_unstable();
                t.push_set(name, keys);
            }
        }
    }
    for (name, mut keys) in [
        ("ruleSkipExact", skip_exact),
        ("ruleSkipPrefix", skip_prefix),
    ] {
        if !keys.is_empty() {
            keys.sort_unstable();
            t.push_set(name, keys);
        }
    }
    t
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
        let names: Vec<&str> = t.entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["placeholders", "mirrors", "exact", "names"]);
        let exact = &t.entries[2].1;
        assert_eq!(
            exact,
            &format!(
                "{{\"quay.io\": [[\"{}\", \"0\", \"quay.m.daocloud.io\", \"\", \"\", \"\", \"\", \"0\", \"0\"]]}}",
                candidate(rank(BucketKind::Exact, "quay.io"), 0)
            )
        );
        assert_eq!(t.max_depth, 0);
        let deep = Config::from_yaml(
            "rules: [{source: gcr.io/a/b, kind: prefix, target: m.example/x}]",
            "test",
        )
        .unwrap();
        assert_eq!(build(&deep.rules, &[]).max_depth, 2);
        assert_eq!(
            candidate(rank(BucketKind::Any, "*"), 99_998)
                .to_string()
                .len(),
            14
        );
        assert_eq!(
            candidate(rank(BucketKind::Rename, "a/b"), 0)
                .to_string()
                .len(),
            14
        );
    }

    #[test]
    fn large_tables_are_cut_under_the_parser_limit_and_read_across_cuts() {
        let mut yaml = String::from("rules:\n");
        for i in 0..3000 {
            yaml.push_str(&format!(
                "  - {{source: registry-{i}.example.com, kind: host, target: mirror-{i}.example.com}}\n"
            ));
        }
        let config = Config::from_yaml(&yaml, "test").unwrap();
        let t = build(&config.rules, &[]);
        let exact: Vec<&(String, String)> = t
            .entries
            .iter()
            .filter(|(n, _)| n.starts_with("exact"))
            .collect();
        assert!(exact.len() > 1, "3,000 rules need more than one variable");
        assert!(exact
            .iter()
            .all(|(_, e)| e.chars().count() <= CHUNK_CODE_POINTS + 1000));
        assert_eq!(
            t.contains("exact", "k"),
            format!(
                "({})",
                (0..exact.len())
                    .map(|i| if i == 0 {
                        "k in variables.exact".to_string()
                    } else {
                        format!("k in variables.exact{i}")
                    })
                    .collect::<Vec<_>>()
                    .join(" || ")
            )
        );
        let names: Vec<&(String, String)> = t
            .entries
            .iter()
            .filter(|(n, _)| n.starts_with("names"))
            .collect();
        let index = t.index("names", "i");
        assert!(index.ends_with("variables.names[i])"), "{index}");
        assert_eq!(index.matches("variables.names").count(), names.len());
    }
}
