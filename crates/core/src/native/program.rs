//! The decision program: CEL that decides an image as
//! [`RuleSet::rewrite`](crate::rules::RuleSet::rewrite) does, reading the
//! rule set from [`super::tables`].
//!
//! Layer: pure core. The program is the engine's algorithm, step for step
//! (the module doc of `rules::engine` lists the steps): parse with the
//! grammar of [`crate::reference`], leave placeholders, invalid references
//! and images already under a mirror alone, apply the global skip list,
//! then take the first covering rule that accepts the reference, in the
//! engine's order, with aliases tried below exact hosts. The apiserver's CEL
//! has no `let`, so `[value].map(name, body)[0]` binds a name; the policy's
//! variables are evaluated once per request and shared by its expressions.

use super::tables::{
    Tables, DIGESTS_DROP, DIGESTS_REQUIRE, DIGESTS_SKIP, EXACT_TIER_RANK, KIND_FLATTEN,
    KIND_FULL_REFERENCE, KIND_HOST, KIND_JOIN, KIND_KEEP, KIND_PREFIX, RULE_SLOTS,
};
use crate::pod::ORIGINAL_IMAGES_ANNOTATION;

/// The reference grammar of `crate::reference`, as anchored RE2.
const LOOKS_LIKE_DOMAIN: &str = r"[.:]|^localhost$|[A-Z]";
const DOMAIN: &str = r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$";
const COMPONENT: &str = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const TAG: &str = r"^:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$";
const DIGEST: &str = r"^@(?:sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})$";
const HEX_IDENTIFIER: &str = r"^[a-f0-9]{64}$";
/// The canonical form of the original-images annotation that detour writes
/// (`{"name":"image",...}`, nothing to escape): the only form that CEL,
/// which cannot parse JSON, reads back.
const CANONICAL_RECORD: &str = r#"^\{(?:"[^"\\\x00-\x1f]*":"[^"\\\x00-\x1f]*"(?:,"[^"\\\x00-\x1f]*":"[^"\\\x00-\x1f]*")*)?\}$"#;

/// What the decision program may leave out for a rule set.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `pullPolicyNever: skip`.
    pub skip_pull_never: bool,
}

/// The policy's variables after the tables, in evaluation order.
pub fn variables(t: &Tables, settings: Settings) -> Vec<(&'static str, String)> {
    let mut keep = String::from("has(c.image)");
    if settings.skip_pull_never {
        keep.push_str(" && !(has(c.imagePullPolicy) && c.imagePullPolicy == 'Never')");
    }
    let entry = |list: &str| {
        format!(
            "{{'at': '/spec/{list}/' + string(i) + '/image', 'name': string(c.name), 'image': string(c.image)}}"
        )
    };
    let containers = format!(
        "(variables.creating && has(object.spec.containers) ? object.spec.containers.transformList(i, c, {keep}, {}) : []) + \
         (variables.creating && has(object.spec.initContainers) ? object.spec.initContainers.transformList(i, c, {keep}, {}) : []) + \
         (has(object.spec.ephemeralContainers) ? object.spec.ephemeralContainers.transformList(i, c, {keep} && !(c.name in variables.existing), {}) : [])",
        entry("containers"),
        entry("initContainers"),
        entry("ephemeralContainers"),
    );
    let refs = format!(
        "variables.containers.map(e, \
[e.image.indexOf('/')].map(slash, \
[slash >= 0 && e.image.substring(0, slash).matches(r'{LOOKS_LIKE_DOMAIN}') ? e.image.substring(0, slash) : ''].map(first, \
[first == '' ? e.image : e.image.substring(slash + 1)].map(rest, \
[rest.indexOf('@')].map(at, \
[at >= 0 ? rest.substring(0, at) : rest].map(nametag, \
[nametag.indexOf(':')].map(colon, \
[first == '' || first == 'index.docker.io' ? 'docker.io' : first].map(domain, \
[colon >= 0 ? nametag.substring(0, colon) : nametag].map(path, \
[domain == 'docker.io' && !path.contains('/') ? 'library/' + path : path].map(repo, \
[colon >= 0 ? ':' + nametag.substring(colon + 1) : ''].map(tag, \
[at >= 0 ? '@' + rest.substring(at + 1) : ''].map(digest, \
{{'at': e.at, 'name': e.name, 'image': e.image, 'domain': domain, 'repo': repo, 'tag': tag, 'digest': digest, \
'host': domain.lowerAscii(), 'key': domain.lowerAscii() + '/' + repo, \
'valid': e.image != '' && !e.image.matches(r'{HEX_IDENTIFIER}') && domain.matches(r'{DOMAIN}') \
&& path.matches(r'^{COMPONENT}(?:/{COMPONENT})*$') && size(repo) <= 255 \
&& (tag == '' || tag.matches(r'{TAG}')) && (digest == '' || digest.matches(r'{DIGEST}')) ? 'y' : ''}}\
)[0])[0])[0])[0])[0])[0])[0])[0])[0])[0])[0])"
    );
    let placeholder = if t.has("placeholders") {
        " || r.image in variables.placeholders"
    } else {
        ""
    };
    let mirror_check = if t.has("mirrors") {
        "dv.prefixes.exists(k, k in variables.mirrors)"
    } else {
        "false"
    };
    let mut skip_checks = Vec::new();
    if t.has("skipExact") {
        skip_checks.push("dv.key in variables.skipExact".to_string());
    }
    if t.has("skipPrefix") {
        skip_checks.push("dv.prefixes.exists(k, k in variables.skipPrefix)".to_string());
    }
    let skip_check = if skip_checks.is_empty() {
        "false".to_string()
    } else {
        skip_checks.join(" || ")
    };
    let direct = search(t, "dv");
    let chosen = if t.has("aliases") {
        let aliased = search(t, "av");
        format!(
            "(d.spec >= {EXACT_TIER_RANK} ? d : \
[dv.prefixes.filter(p, p in variables.aliases)].map(ah, size(ah) == 0 ? d : \
[variables.aliases[ah[0]]].map(to, \
[dv.key == ah[0] ? '' : dv.key.substring(size(ah[0]) + 1)].map(arest, \
[{join_ap}].map(ap, \
[to[0] == 'docker.io' && !ap.contains('/') ? 'library/' + ap : ap].map(arepo, \
ap == '' || size(arepo) > 255 ? d : \
[{{'host': dyn(to[0]), 'repo': dyn(arepo), 'key': dyn(to[0] + '/' + arepo), 'prefixes': dyn({prefixes})}}].map(av, \
[{aliased}].map(a, a.out != '' && (d.out == '' || a.spec > d.spec) ? a : d)[0])[0])[0])[0])[0])[0])[0])",
            join_ap = join("to[1]", "arest"),
            prefixes = prefixes("to[0]", "arepo"),
        )
    } else {
        "d".to_string()
    };
    let decisions = format!(
        "variables.refs.map(r, r.valid != 'y'{placeholder} ? {{'to': '', 'rule': ''}} : \
[{{'host': dyn(r.host), 'repo': dyn(r.repo), 'key': dyn(r.key), 'prefixes': dyn({prefixes})}}].map(dv, \
{mirror_check} || {skip_check} ? {{'to': '', 'rule': ''}} : \
[{direct}].map(d, [{chosen}].map(w, \
w.out == '' || w.out == 'K' || w.out == r.domain + '/' + r.repo + r.tag + r.digest ? {{'to': '', 'rule': ''}} \
: {{'to': string(w.out), 'rule': string(w.rule)}})[0])[0])[0])",
        prefixes = prefixes("r.host", "r.repo"),
    );
    let changes =
        "lists.range(size(variables.decisions)).filter(n, variables.decisions[n].to != '').map(n, \
{'at': variables.refs[n].at, 'name': variables.refs[n].name, 'from': variables.refs[n].image, \
'to': variables.decisions[n].to, 'rule': variables.names[int(variables.decisions[n].rule)]})"
            .to_string();
    vec![
        ("creating", "request.operation == 'CREATE'".to_string()),
        (
            "existing",
            "variables.creating || !has(oldObject.spec.ephemeralContainers) ? [] : oldObject.spec.ephemeralContainers.map(c, c.name)".to_string(),
        ),
        ("containers", containers),
        ("refs", refs),
        ("decisions", decisions),
        ("changes", changes),
    ]
}

/// `path` prefixes of `host/repo` at component boundaries, longest first,
/// ending with the bare host (`component_prefixes` of the engine).
fn prefixes(host: &str, repo: &str) -> String {
    format!(
        "[{repo}.split('/')].map(cs, lists.range(size(cs)).map(n, {host} + '/' + cs.slice(0, size(cs) - n).join('/')) + [{host}])[0]"
    )
}

/// `a` and `b` joined by '/', either may be empty (`RepoPrefix::join_path`).
fn join(a: &str, b: &str) -> String {
    format!("({a} == '' ? {b} : ({b} == '' ? {a} : {a} + '/' + {b}))")
}

/// The first covering rule that accepts the view `v`, as
/// `{'spec': rank, 'out': result, 'rule': index}`; `out` is '' when none
/// does, 'K' when an exception rule keeps the reference.
fn search(t: &Tables, v: &str) -> String {
    let mut parts = Vec::new();
    if t.has("renames") {
        parts.push(format!(
            "({v}.key in variables.renames ? variables.renames[{v}.key] : [])"
        ));
    }
    if t.has("exact") {
        parts.push(format!(
            "{v}.prefixes.filter(p, p in variables.exact).map(p, variables.exact[p]).flatten()"
        ));
    }
    if t.has("subdomains") {
        // Every suffix of the host after a dot, longest first, with the port.
        parts.push(format!(
            "({v}.host.startsWith('[') ? [] : [{v}.host.split(':')].map(hp, [hp[0].split('.')].map(ls, \
[size(hp) > 1 ? ':' + hp[1] : ''].map(port, \
lists.range(size(ls) - 1).map(j, ls.slice(j + 1, size(ls)).join('.') + port).map(sh, \
{sp}.filter(p, p in variables.subdomains).map(p, variables.subdomains[p]).flatten()).flatten())[0])[0])[0])",
            sp = prefixes("sh", &format!("{v}.repo")),
        ));
    }
    if t.has("any") {
        parts.push("variables.any".to_string());
    }
    // `lists.range(0)`: an empty list of int, where `[]` has no element type.
    let candidates = if parts.is_empty() {
        "lists.range(0)".to_string()
    } else {
        parts.join(" + ")
    };
    format!(
        "[{candidates}].map(cs, [cs.map(c, {outcome})].map(os, \
[lists.range(size(os)).filter(n, os[n] != 'D')].map(hit, size(hit) == 0 ? \
{{'spec': dyn(0), 'out': dyn(''), 'rule': dyn(-1)}} : \
{{'spec': dyn(cs[hit[0]] / {RULE_SLOTS}), 'out': dyn(os[hit[0]]), 'rule': dyn(cs[hit[0]] % {RULE_SLOTS})}})[0])[0])[0]",
        outcome = outcome(t, v),
    )
}

/// What rule `id` (bound from the candidate `c`) does with the view `v`:
/// 'D' when it declines, 'K' when it keeps, else the new reference.
fn outcome(t: &Tables, v: &str) -> String {
    let mut declines = Vec::new();
    if t.has("allowRules") {
        let mut inside = Vec::new();
        if t.has("allowExact") {
            inside.push(format!(
                "string(id) + '|' + {v}.key in variables.allowExact"
            ));
        }
        if t.has("allowPrefix") {
            inside.push(format!(
                "{v}.prefixes.exists(p, string(id) + '|' + p in variables.allowPrefix)"
            ));
        }
        declines.push(format!(
            "(id in variables.allowRules && !({}))",
            inside.join(" || ")
        ));
    }
    if t.has("ruleSkipExact") {
        declines.push(format!(
            "string(id) + '|' + {v}.key in variables.ruleSkipExact"
        ));
    }
    if t.has("ruleSkipPrefix") {
        declines.push(format!(
            "{v}.prefixes.exists(p, string(id) + '|' + p in variables.ruleSkipPrefix)"
        ));
    }
    let list_decline = if declines.is_empty() {
        "false".to_string()
    } else {
        declines.join(" || ")
    };
    let (digest_decline, kept_digest) = if t.has("digests") {
        (
            format!(
                "[variables.digests[id]].map(dp, (dp == {DIGESTS_SKIP} && r.digest != '') || \
(dp == {DIGESTS_DROP} && r.digest != '' && r.tag == '') || (dp == {DIGESTS_REQUIRE} && r.digest == ''))[0]"
            ),
            format!("(variables.digests[id] == {DIGESTS_DROP} ? '' : r.digest)"),
        )
    } else {
        ("false".to_string(), "r.digest".to_string())
    };
    let new_path = format!(
        "kd == {KIND_HOST} ? {v}.repo : \
kd == {KIND_PREFIX} ? {prefix} : \
kd == {KIND_FULL_REFERENCE} ? ({v}.host.matches(r'^{COMPONENT}$') ? {full} : '') : \
kd == {KIND_FLATTEN} ? {flatten} : \
kd == {KIND_JOIN} ? [([tg[3]] + rest.split('/')).filter(x, x != '').join('.')].map(jn, {joined})[0] : \
tg[1]",
        prefix = join("tg[1]", "rest"),
        full = format!(
            "[{v}.host + '/' + {v}.repo].map(hr, {})[0]",
            join("tg[1]", "hr")
        ),
        flatten = format!(
            "[{v}.repo.substring({v}.repo.lastIndexOf('/') + 1)].map(last, {})[0]",
            join("tg[1]", "last")
        ),
        joined = join("tg[1]", "jn"),
    );
    format!(
        "[c % {RULE_SLOTS}].map(id, {list_decline} ? 'D' : variables.kinds[id] == {KIND_KEEP} ? 'K' : {digest_decline} ? 'D' : \
[variables.targets[id]].map(tg, [tg[2] == '' ? {v}.repo : ({v}.repo == tg[2] ? '' : {v}.repo.substring(size(tg[2]) + 1))].map(rest, \
[variables.kinds[id]].map(kd, [{new_path}].map(np, \
[tg[0] == 'docker.io' && np != '' && !np.contains('/') ? 'library/' + np : np].map(fp, \
fp == '' || size(fp) > 255 ? 'D' : tg[0] + '/' + fp + r.tag + {kept_digest})[0])[0])[0])[0])[0])[0]"
    )
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
    format!(
        "variables.changes.map(c, JSONPatch{{op: 'replace', path: c.at, value: c.to}}) + \
(!variables.creating || size(variables.changes) == 0 ? [] : \
[has(object.metadata.annotations) && '{key}' in object.metadata.annotations ? object.metadata.annotations['{key}'] : ''].map(before, \
[before.matches(r'{CANONICAL_RECORD}') && before != '{{}}' ? before.substring(2, size(before) - 2).split('\",\"').map(kv, kv.split('\":\"')) : []].map(earlier, \
[earlier.map(kv, kv[0])].map(names, [variables.changes.map(c, c.name)].map(changed, \
['{{' + (names + changed).distinct().sort().map(k, '\"' + k + '\":\"' + \
(k in names ? earlier[names.lastIndexOf(k)][1] : variables.changes[changed.indexOf(k)].from) + '\"').join(',') + '}}'].map(record, \
[!has(object.metadata.annotations) ? \
JSONPatch{{op: 'add', path: '/metadata/annotations', value: {{'{key}': record}}}} : \
JSONPatch{{op: '{key}' in object.metadata.annotations ? 'replace' : 'add', path: '{pointer}', value: record}}])[0])[0])[0])[0])[0])"
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

/// Containers whose image is not a reference (the webhook warns of them).
pub fn invalid_expression(t: &Tables) -> String {
    let placeholder = if t.has("placeholders") {
        " && !(r.image in variables.placeholders)"
    } else {
        ""
    };
    format!("variables.refs.filter(r, r.valid != 'y'{placeholder})")
}

pub fn invalid_message() -> &'static str {
    "variables.invalid.map(r, 'detour: ' + r.name + ': image ' + strings.quote(r.image) + ' is not a valid reference').join('; ')"
}
