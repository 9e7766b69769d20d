//! The decision program: CEL that decides an image as
//! [`RuleSet::rewrite`](crate::rules::RuleSet::rewrite) does, reading the
//! rule set from [`super::tables`].
//!
//! Layer: pure core. The program is the engine's algorithm, step for step
//! (the module doc of `rules::engine` lists the steps): parse with the
//! grammar of [`crate::reference`], leave placeholders, invalid references
//! and images already under a mirror alone, apply the global skip list,
//! then take the first covering rule that accepts the reference, in the
//! engine's order, with aliases tried below exact hosts.
//!
//! Written for the apiserver's CEL, where every step costs microseconds
//! (`bench/cel-cost.sh` prices them): one pass per container list, by
//! index, with no intermediate records; few names bound (`[x].map(n, …)[0]`,
//! the only `let`, is a comprehension); one regular expression for the
//! grammar, asked only of images a rule would rewrite; prefixes built only
//! as deep as the tables' keys; and the winning rule found as the maximum of
//! the accepting candidates (their decimal strings order as the engine tries
//! them, see [`super::tables::RULE_SLOTS`]).

use super::tables::{
    Tables, DIGESTS_DROP, DIGESTS_REQUIRE, DIGESTS_SKIP, ENTRY_CANDIDATE, ENTRY_DIGESTS,
    ENTRY_DOMAIN, ENTRY_INDEX, ENTRY_KIND, ENTRY_PATH, ENTRY_PATH_SLASH, ENTRY_SOURCE_PATH,
    ENTRY_TOKEN, EXACT_TIER_RANK, KIND_FLATTEN, KIND_FULL_REFERENCE, KIND_HOST, KIND_JOIN,
    KIND_KEEP, KIND_PREFIX, RULE_SLOTS,
};
use crate::pod::ORIGINAL_IMAGES_ANNOTATION;

/// A path component of the reference grammar.
const COMPONENT: &str = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
/// The same without '.': a first component followed by '/' that is not a
/// registry host (a host has a '.', a ':', is localhost or has uppercase).
const COMPONENT_NO_DOT: &str = r"[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*";
const DOMAIN: &str = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?";
const TAG_AND_DIGEST: &str = r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@(?:sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128}))?";
/// 64 lowercase hex digits: refused as a name (it would read as an image ID).
const HEX_IDENTIFIER: &str = r"^[a-f0-9]{64}$";
/// The first component with its '/', when the parser reads it as the
/// registry host: it has a '.' or a ':', is localhost, or has uppercase.
const HOST_COMPONENT: &str = r"^(?:[^/]*[.:A-Z][^/]*|localhost)/";
/// What follows the path of a valid reference (`:tag@digest`): from the
/// first ':' or '@' that no '/' follows.
const TAG_AND_DIGEST_PART: &str = r"[:@][^/]*$";
/// Padding of the empty winner: sorts below every 14-digit candidate.
const NO_WINNER: &str = "00000000000000";
/// The canonical form of the original-images annotation that detour writes
/// (`{"name":"image",...}`, nothing to escape; names sort as their entries
/// because every character of a name is above '"'): the only form that CEL,
/// which cannot parse JSON, reads back.
const CANONICAL_RECORD: &str =
    r#"^\{(?:"[^\x00-\x22\\]*":"[^"\\\x00-\x1f]*"(?:,"[^\x00-\x22\\]*":"[^"\\\x00-\x1f]*")*)?\}$"#;

/// The whole reference grammar as one anchored expression (one match per
/// image): a registry host then a path, or a path whose first component
/// (when more follow) cannot be read as a host; then tag and digest. Which
/// reading applies is decided by `first` below, as the parser decides it;
/// both readings accept the same strings (a one-label host like `foo` is
/// also a path component), so one expression answers for both.
fn grammar() -> String {
    format!(
        "^(?:{DOMAIN}/{COMPONENT}(?:/{COMPONENT})*|{COMPONENT}|{COMPONENT_NO_DOT}(?:/{COMPONENT})+){TAG_AND_DIGEST}$"
    )
}

/// What the decision program may leave out for a rule set.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `pullPolicyNever: skip`.
    pub skip_pull_never: bool,
}

/// Which containers detour decides: those with an image, and not those
/// with `imagePullPolicy: Never` when the config skips them.
fn keep(settings: Settings) -> String {
    let mut keep = String::from("has(c.image)");
    if settings.skip_pull_never {
        keep.push_str(" && !(has(c.imagePullPolicy) && c.imagePullPolicy == 'Never')");
    }
    keep
}

/// The container lists: each one's name, the test that it is read at all,
/// and the test that puts one of its containers `c` in scope. On CREATE
/// every container is in scope; on an UPDATE of `pods/ephemeralcontainers`
/// (`kubectl debug`) only the ephemeral containers the Pod did not have.
fn lists(settings: Settings) -> [(&'static str, String, String); 3] {
    let keep = keep(settings);
    ["containers", "initContainers", "ephemeralContainers"].map(|list| {
        if list == "ephemeralContainers" {
            (
                list,
                format!("has(object.spec.{list})"),
                format!("{keep} && !(c.name in variables.existing)"),
            )
        } else {
            (
                list,
                format!("variables.creating && has(object.spec.{list})"),
                keep.clone(),
            )
        }
    })
}

/// `body` with container `c`'s image taken apart, as the parser does, into
/// `f` (the host component with its '/', or ''), `sx` (`:tag@digest`),
/// `path`, `dom` (the domain, `docker.io` by default) and `repo` (the path
/// with `library/` for Docker Hub). Every step is total on any string.
fn with_parts(body: &str) -> String {
    format!(
        "[c.image.find(r'{HOST_COMPONENT}')].map(f, \
[c.image.find(r'{TAG_AND_DIGEST_PART}')].map(sx, \
[c.image.substring(size(f), size(c.image) - size(sx))].map(path, \
[f == '' || f == 'index.docker.io/' ? 'docker.io' : f.substring(0, size(f) - 1)].map(dom, \
[dom == 'docker.io' && !path.contains('/') ? 'library/' + path : path].map(repo, \
{body})[0])[0])[0])[0])[0]"
    )
}

/// The policy's variables after the tables, in evaluation order.
pub fn variables(t: &Tables, settings: Settings) -> Vec<(&'static str, String)> {
    let decide_image = format!(
        "{placeholder} ? '' : {parts}",
        placeholder = t.contains("placeholders", "c.image"),
        parts = with_parts(&format!("size(repo) > 255 ? '' : {}", decide(t))),
    );
    // One decision per container of each list, by index ('' = unchanged):
    // no intermediate records, the index is the container's.
    let [containers, inits, ephemerals] = lists(settings).map(|(list, present, in_scope)| {
        format!("{present} ? object.spec.{list}.map(c, {in_scope} ? ({decide_image}) : '') : []")
    });
    let rule = t.index(
        "names",
        &format!("({} - int(d[i].substring(9, 14)))", RULE_SLOTS - 1),
    );
    let changes = [
        ("containers", "containerDecisions"),
        ("initContainers", "initDecisions"),
        ("ephemeralContainers", "ephemeralDecisions"),
    ]
    .map(|(list, var)| {
        format!(
            "[variables.{var}].map(d, lists.range(size(d)).filter(i, d[i] != '').map(i, \
{{'at': '/spec/{list}/' + string(i) + '/image', 'name': string(object.spec.{list}[i].name), \
'from': string(object.spec.{list}[i].image), 'to': d[i].substring(15), 'rule': {rule}}}))[0]"
        )
    })
    .join(" + ");
    vec![
        ("creating", "request.operation == 'CREATE'".to_string()),
        (
            "existing",
            "variables.creating || !has(oldObject.spec.ephemeralContainers) ? [] : oldObject.spec.ephemeralContainers.map(c, c.name)".to_string(),
        ),
        ("containerDecisions", containers),
        ("initDecisions", inits),
        ("ephemeralDecisions", ephemerals),
        ("changes", changes),
    ]
}

/// Is container `c`'s image not a reference under the grammar (one
/// expression; 64 hex digits are refused as an image ID)? Asked last, of
/// the images a rule would rewrite only: every step before it is total on
/// any string, and most images of a Pod are not rewritten.
fn not_a_reference() -> String {
    format!(
        "!c.image.matches(r'{}') || (size(c.image) == 64 && c.image.matches(r'{HEX_IDENTIFIER}'))",
        grammar()
    )
}

/// The prefixes of `host/repo` at component boundaries that are at most
/// `depth` components deep, longest first, ending with the bare host
/// (the engine's `component_prefixes`, cut where no table key reaches).
fn prefixes_of(host: &str, repo: &str, depth: usize) -> String {
    if depth == 0 {
        return format!("[{host}]");
    }
    let levels: Vec<String> = (1..=depth)
        .rev()
        .map(|d| format!("(size(cs) >= {d} ? [{host} + '/' + cs.slice(0, {d}).join('/')] : [])"))
        .collect();
    format!(
        "[{repo}.split('/')].map(cs, {} + [{host}])[0]",
        levels.join(" + ")
    )
}

/// `a` and `b` joined by '/', either may be empty (`RepoPrefix::join_path`).
fn join(a: &str, b: &str) -> String {
    format!("({a} == '' ? {b} : ({b} == '' ? {a} : {a} + '/' + {b}))")
}

/// A view of a reference for the search: its host, repository, key and
/// prefixes (the direct reference, or its alias).
struct View {
    host: String,
    repo: String,
    key: String,
    prefixes: String,
}

/// `prefixes.exists(k, k in table)`, without the comprehension when the
/// only prefix is the host.
fn any_prefix_in(t: &Tables, v: &View, table: &str) -> String {
    if t.max_depth == 0 {
        t.contains(table, &v.host)
    } else {
        format!("{}.exists(k, {})", v.prefixes, t.contains(table, "k"))
    }
}

/// The decision for an image taken apart by [`with_parts`]:
/// `'<candidate> <new image>'`, or '' when the image stays as written.
fn decide(t: &Tables) -> String {
    let direct = View {
        host: "dom.lowerAscii()".into(),
        repo: "repo".into(),
        key: "(dom.lowerAscii() + '/' + repo)".into(),
        prefixes: "ps".into(),
    };
    let mut leave = Vec::new();
    if t.has("mirrors") {
        leave.push(any_prefix_in(t, &direct, "mirrors"));
    }
    if t.has("skipExact") {
        leave.push(t.contains("skipExact", &direct.key));
    }
    if t.has("skipPrefix") {
        leave.push(any_prefix_in(t, &direct, "skipPrefix"));
    }
    let leave = if leave.is_empty() {
        "false".to_string()
    } else {
        leave.join(" || ")
    };
    let direct_winner = winner(t, &direct);
    let chosen = if t.has("aliases") {
        let alias = View {
            host: "to[0]".into(),
            repo: "arepo".into(),
            key: "(to[0] + '/' + arepo)".into(),
            prefixes: "aps".into(),
        };
        let aliased = winner(t, &alias);
        let lookup = if t.max_depth == 0 {
            format!(
                "({} ? [{h}] : [])",
                t.contains("aliases", &direct.host),
                h = direct.host
            )
        } else {
            format!("ps.filter(p, {})", t.contains("aliases", "p"))
        };
        format!(
            "(int(d.substring(0, 9)) >= {exact_rank} ? d : \
[{lookup}].map(ah, size(ah) == 0 ? d : \
[{alias_to}].map(to, \
[{join_ap}].map(ap, \
[to[0] == 'docker.io' && !ap.contains('/') ? 'library/' + ap : ap].map(arepo, \
ap == '' || size(arepo) > 255 ? d : \
[{prefixes}].map(aps, [{aliased}].map(a, a != '{NO_WINNER}' && a.substring(0, 9) > d.substring(0, 9) ? a : d)[0])[0])[0])[0])[0])[0])",
            exact_rank = EXACT_TIER_RANK,
            alias_to = t.get("aliases", "ah[0]", "['', '']"),
            join_ap = join(
                "to[1]",
                &format!(
                    "({k} == ah[0] ? '' : {k}.substring(size(ah[0]) + 1))",
                    k = direct.key
                )
            ),
            prefixes = prefixes_of("to[0]", "arepo", t.max_depth),
        )
    } else {
        "d".to_string()
    };
    let settle = format!(
        "w == '{NO_WINNER}' || w.substring(15) == 'K' || w.substring(15) == dom + '/' + repo + sx || {} ? '' : w",
        not_a_reference()
    );
    let body = if t.has("aliases") {
        format!("{leave} ? '' : [{direct_winner}].map(d, [{chosen}].map(w, {settle})[0])[0]")
    } else {
        format!("{leave} ? '' : [{direct_winner}].map(w, {settle})[0]")
    };
    if t.max_depth == 0 {
        body
    } else {
        format!(
            "[{}].map(ps, {body})[0]",
            prefixes_of(&direct.host, &direct.repo, t.max_depth)
        )
    }
}

/// The rules that cover the view, in the engine's order (renames, exact
/// hosts by depth, subdomains, any), as candidates (see `tables`).
fn candidates(t: &Tables, v: &View) -> String {
    let mut parts = Vec::new();
    if t.has("renames") {
        parts.push(t.get("renames", &v.key, "[]"));
    }
    if t.has("exact") {
        parts.push(if t.max_depth == 0 {
            t.get("exact", &v.host, "[]")
        } else {
            format!(
                "{}.filter(p, {}).map(p, {}).flatten()",
                v.prefixes,
                t.contains("exact", "p"),
                t.get("exact", "p", "[]")
            )
        });
    }
    if t.has("subdomains") {
        // Every suffix of the host after a dot, longest first, with the port.
        parts.push(format!(
            "({h}.startsWith('[') ? [] : [{h}.split(':')].map(hp, [hp[0].split('.')].map(ls, \
[size(hp) > 1 ? ':' + hp[1] : ''].map(port, \
lists.range(size(ls) - 1).map(j, ls.slice(j + 1, size(ls)).join('.') + port).map(sh, \
{sp}.filter(p, {sub_in}).map(p, {sub_get}).flatten()).flatten())[0])[0])[0])",
            sub_in = t.contains("subdomains", "p"),
            sub_get = t.get("subdomains", "p", "[]"),
            h = v.host,
            sp = prefixes_of("sh", &v.repo, t.max_depth),
        ));
    }
    if t.has("any") {
        parts.push("variables.any".to_string());
    }
    if parts.is_empty() {
        "[]".to_string()
    } else {
        parts.join(" + ")
    }
}

/// The first covering rule that accepts the view, as
/// `'<candidate> <outcome>'` ('K' for an exception rule), or [`NO_WINNER`].
fn winner(t: &Tables, v: &View) -> String {
    format!(
        "(({}).map(c, {}).filter(o, o != 'D') + ['{NO_WINNER}']).max()",
        candidates(t, v),
        outcome(t, v)
    )
}

/// Does the repository of the view belong to the set of rule `index` whose
/// exact repositories and prefixes are the `tables`? One test per table the
/// rule set has, to be joined with `||`.
fn in_rule_set(t: &Tables, tables: (&str, &str), index: &str, v: &View) -> Vec<String> {
    let (exact, prefix) = tables;
    let mut tests = Vec::new();
    if t.has(exact) {
        tests.push(t.contains(exact, &format!("{index} + '|' + {}", v.key)));
    }
    if t.has(prefix) {
        tests.push(format!(
            "{}.exists(p, {})",
            v.prefixes,
            t.contains(prefix, &format!("{index} + '|' + p"))
        ));
    }
    tests
}

/// What the rule of entry `c` does with the view: 'D' when it declines,
/// else `'<candidate> K'` (kept) or `'<candidate> <new reference>'`. Only
/// the kinds and features the rule set uses are tested for.
fn outcome(t: &Tables, v: &View) -> String {
    let field = |i: usize| format!("c[{i}]");
    let cand = field(ENTRY_CANDIDATE);
    let index = field(ENTRY_INDEX);
    let mut lists = Vec::new();
    if t.has("allowRules") {
        lists.push(format!(
            "({} && !({}))",
            t.contains("allowRules", &index),
            in_rule_set(t, ("allowExact", "allowPrefix"), &index, v).join(" || ")
        ));
    }
    lists.extend(in_rule_set(
        t,
        ("ruleSkipExact", "ruleSkipPrefix"),
        &index,
        v,
    ));
    let kind = field(ENTRY_KIND);
    let digests = field(ENTRY_DIGESTS);
    let (digest_decline, kept_suffix) = if t.digest_policies {
        (
            format!(
                "({digests} == '{DIGESTS_SKIP}' && sx.contains('@')) || \
({digests} == '{DIGESTS_DROP}' && sx.startsWith('@')) || \
({digests} == '{DIGESTS_REQUIRE}' && !sx.contains('@'))"
            ),
            format!("({digests} == '{DIGESTS_DROP}' ? sx.split('@')[0] : sx)"),
        )
    } else {
        (String::new(), "sx".to_string())
    };
    let (path, slashed) = (field(ENTRY_PATH), field(ENTRY_PATH_SLASH));
    let source_path = field(ENTRY_SOURCE_PATH);
    let rest = format!(
        "({sp} == '' ? {repo} : ({repo} == {sp} ? '' : {repo}.substring(size({sp}) + 1)))",
        sp = source_path,
        repo = v.repo
    );
    let kinds: Vec<i64> = t
        .kinds
        .iter()
        .copied()
        .filter(|&k| k != KIND_KEEP)
        .collect();
    let path_of = |k: i64| -> String {
        match k {
            KIND_HOST => v.repo.clone(),
            KIND_PREFIX => format!("({rest} == '' ? {path} : {slashed} + {rest})"),
            KIND_FULL_REFERENCE => format!(
                "({h}.matches(r'^{COMPONENT}$') ? {slashed} + {h} + '/' + {r} : '')",
                h = v.host,
                r = v.repo
            ),
            KIND_FLATTEN => format!(
                "{slashed} + {r}.substring({r}.lastIndexOf('/') + 1)",
                r = v.repo
            ),
            KIND_JOIN => format!(
                "[([{}] + {rest}.split('/')).filter(x, x != '').join('.')].map(jn, jn == '' ? {path} : {slashed} + jn)[0]",
                field(ENTRY_TOKEN)
            ),
            _ => path.clone(),
        }
    };
    // The new path: one formula per kind used, the last without a test.
    let mut new_path = String::new();
    for (n, &k) in kinds.iter().enumerate() {
        if n + 1 == kinds.len() {
            new_path.push_str(&path_of(k));
        } else {
            new_path.push_str(&format!("{kind} == '{k}' ? {} : ", path_of(k)));
        }
    }
    if new_path.is_empty() {
        new_path = "''".to_string();
    }
    let domain = field(ENTRY_DOMAIN);
    let library = if t.docker_hub_targets {
        format!("({domain} == 'docker.io' && np != '' && !np.contains('/') ? 'library/' + np : np)")
    } else {
        "np".to_string()
    };
    let apply = format!(
        "[{new_path}].map(np, np == '' || size({library}) > 255 ? 'D' : {cand} + ' ' + {domain} + '/' + {library} + {kept_suffix})[0]"
    );
    // The engine's order: the rule's lists, an exception rule, its digest
    // policy, then the transform.
    let mut out = String::new();
    if !lists.is_empty() {
        out.push_str(&format!("{} ? 'D' : ", lists.join(" || ")));
    }
    if t.kinds.contains(&KIND_KEEP) {
        out.push_str(&format!("{kind} == '{KIND_KEEP}' ? {cand} + ' K' : "));
    }
    if !digest_decline.is_empty() {
        out.push_str(&format!("{digest_decline} ? 'D' : "));
    }
    out.push_str(&apply);
    out
}

/// The JSON Patch of the mutation: each changed image, and on CREATE the
/// original-images annotation, merged with an earlier record as the
/// webhook merges it (earlier entries win, sorted by container name).
pub fn patch_expression() -> String {
    let key = ORIGINAL_IMAGES_ANNOTATION;
    let pointer = format!(
        "/metadata/annotations/{}",
        key.replace('~', "~0").replace('/', "~1")
    );
    let entry = "'\"' + c.name + '\":\"' + c.from + '\"'";
    format!(
        "variables.changes.map(c, JSONPatch{{op: 'replace', path: c.at, value: c.to}}) + \
(!variables.creating || size(variables.changes) == 0 ? [] : \
[has(object.metadata.annotations) && '{key}' in object.metadata.annotations ? object.metadata.annotations['{key}'] : ''].map(before, \
[before != '' && before != '{{}}' && before.matches(r'{CANONICAL_RECORD}') ? before.substring(2, size(before) - 2).split('\",\"') : []].map(earlier, \
[earlier.map(kv, kv.split('\":\"')[0])].map(names, \
['{{' + (earlier.transformList(i, kv, names.lastIndexOf(names[i]) == i, '\"' + kv + '\"') + \
variables.changes.filter(c, !(c.name in names)).map(c, {entry})).sort().join(',') + '}}'].map(record, \
[!has(object.metadata.annotations) ? \
JSONPatch{{op: 'add', path: '/metadata/annotations', value: {{'{key}': record}}}} : \
JSONPatch{{op: '{key}' in object.metadata.annotations ? 'replace' : 'add', path: '{pointer}', value: record}}])[0])[0])[0])[0])"
    )
}

/// The audit warning: one message for every image that would change.
pub fn would_rewrite_message() -> &'static str {
    "variables.changes.map(c, 'detour: would rewrite ' + c.name + ': ' + c.from + ' -> ' + c.to).join('; ')"
}

/// The audit annotation's value: the webhook's JSON array of
/// `{"container","from","to","rule"}`, or '' (the apiserver then writes no
/// annotation; CEL has no string-or-null type for a conditional).
pub fn would_rewrite_annotation() -> &'static str {
    "size(variables.changes) == 0 ? '' : '[' + variables.changes.map(c, '{\"container\":\"' + c.name + '\",\"from\":\"' + c.from + '\",\"to\":\"' + c.to + '\",\"rule\":' + c.rule + '}').join(',') + ']'"
}

/// Containers whose image is not a reference (the webhook warns of them):
/// one regular expression per image; only an image of more than 247
/// characters is taken apart, since only its name (with `library/`, 8 more)
/// can pass the 255-character limit.
pub fn invalid_expression(t: &Tables, settings: Settings) -> String {
    let invalid = format!(
        "!({placeholder}) && ({not_a_reference} || (size(c.image) > 247 && {too_long}))",
        placeholder = t.contains("placeholders", "c.image"),
        not_a_reference = not_a_reference(),
        too_long = with_parts("size(repo) > 255"),
    );
    lists(settings)
        .map(|(list, present, in_scope)| {
            format!(
                "({present} ? object.spec.{list}.filter(c, {in_scope} && {invalid}).map(c, {{'name': string(c.name), 'image': string(c.image)}}) : [])"
            )
        })
        .join(" + ")
}

pub fn invalid_message() -> &'static str {
    "variables.invalid.map(r, 'detour: ' + r.name + ': image ' + strings.quote(r.image) + ' is not a valid reference').join('; ')"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidate_sentinel_sorts_below_every_candidate() {
        let low = super::super::tables::candidate(100_000_000, 99_999).to_string();
        assert!(NO_WINNER < low.as_str() && NO_WINNER.len() == low.len());
    }
}
