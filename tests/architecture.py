#!/usr/bin/env python3
"""Checks the layering that the README's Layout section draws, and fails
when it slips:

1. Crates: each detour crate depends only on the detour crates below it
   (ALLOWED), and detour-core's dependency tree holds no async runtime,
   HTTP stack, registry or Kubernetes client (FORBIDDEN_IN_CORE); read from
   `cargo metadata`.
2. Modules: no module imports, directly or through others, a module that
   imports it back: the layering that Cargo holds between crates, held here
   between the modules of one crate.

Usage: architecture.py [CRATE_SRC_DIR ...]   (default: every crate's src/,
with the crate checks; with arguments, only the module check of those)

Each .rs file is a module (foo.rs and foo/mod.rs are `foo`; a file declared
with `mod x;` inside foo.rs lives in foo/x.rs). An edge A -> B is any path
written in A (a `use` item, braces expanded, or a path in code) that names B
through `crate::`, `super::` or `self::`. A path resolves to the longest
module it names; an item of B is B. Edges to oneself are dropped, and so
are edges from a test module (tests/ files and `mod tests`, which only
ever look up at the code they test). Inline `mod x { ... }` blocks count
as part of their file.
"""

import json
import os
import re
import subprocess
import sys

# Each workspace crate and the detour crates it may depend on (README, Layout).
ALLOWED = {
    "detour-core": set(),
    "detour-registry": {"detour-core"},
    "detour-serve": set(),
    "detour-cluster": {"detour-core"},
    "detour-webhook": {"detour-core", "detour-registry", "detour-serve", "detour-cluster"},
    "detour-proxy": {"detour-core", "detour-registry", "detour-serve"},
    "detour": {
        "detour-core",
        "detour-registry",
        "detour-serve",
        "detour-cluster",
        "detour-webhook",
        "detour-proxy",
    },
}
FORBIDDEN_IN_CORE = {"tokio", "hyper", "reqwest", "kube", "kube-client", "axum", "mio", "notify", "rustls"}

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def strip(text):
    # Comments and string literals name paths that are not imports.
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    text = re.sub(r"'(?:\\.|[^'\\])'", "''", text)
    return text


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    depth = 0
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                prefix, inner = tree[:start], tree[start + 1 : i]
                parts, d, last = [], 0, 0
                for j, c in enumerate(inner):
                    if c == "{":
                        d += 1
                    elif c == "}":
                        d -= 1
                    elif c == "," and d == 0:
                        parts.append(inner[last:j])
                        last = j + 1
                parts.append(inner[last:])
                out = []
                for p in parts:
                    if p:
                        out.extend(expand(prefix + p))
                return out
    return [tree]


def paths_in(text):
    found = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        found.extend(expand(m.group(1)))
    body = re.sub(r"\buse\s+[^;]+;", "", text)
    found.extend(
        m.group(0)
        for m in re.finditer(r"\b(?:crate|super|self)(?:::" + IDENT + ")+", body)
    )
    return found


def resolve(path, here, modules):
    parts = [p for p in re.split(r"::", path) if p]
    parts = [p.split(" as ")[0] for p in parts]
    if not parts:
        return None
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    elif parts[0] in ("super", "self"):
        base = here
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
        rest = parts
    else:
        return None
    target = base
    for p in rest:
        if target + (p,) in modules:
            target = target + (p,)
        else:
            break
    return target


def is_test(module):
    return "tests" in module


def check(src):
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[module_of(src, path)] = path
    modules = set(files)
    edges = {m: set() for m in modules}
    for module, path in files.items():
        if is_test(module):
            continue
        with open(path, encoding="utf-8") as f:
            text = strip(f.read())
        # Inline test modules look up at the code they test.
        text = re.sub(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{.*", "", text, flags=re.S)
        for p in paths_in(text):
            target = resolve(p, module, modules)
            if target is None or target == module or is_test(target):
                continue
            # A module may name its own ancestors' paths only to reach down
            # (crate::a::b from a::c goes to b); naming the ancestor itself
            # is an edge like any other.
            edges[module].add(target)
    return cycles(edges)


def cycles(edges):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [(c, {v: sorted(edges[v] & set(c)) for v in c}) for c in found]


def name(module):
    return "::".join(module) or "(crate root)"


def check_crates(root):
    """Problems with the crate graph, as sentences."""
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout
    meta = json.loads(out)
    packages = {p["id"]: p for p in meta["packages"]}
    members = {packages[i]["name"] for i in meta["workspace_members"]}
    problems = []
    if members != set(ALLOWED):
        problems.append(f"workspace members {sorted(members)} are not the crates of the Layout {sorted(ALLOWED)}")
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    normal = lambda dep: any(k["kind"] is None for k in dep["dep_kinds"])
    for node in nodes.values():
        name = packages[node["id"]]["name"]
        if name not in ALLOWED:
            continue
        uses = {packages[d["pkg"]]["name"] for d in node["deps"] if normal(d)}
        above = {u for u in uses if u.startswith("detour") and u not in ALLOWED[name]}
        for u in sorted(above):
            problems.append(f"{name} depends on {u}, which the Layout does not allow")
        if name == "detour-core":
            seen, todo = set(), [node["id"]]
            while todo:
                for d in nodes[todo.pop()]["deps"]:
                    if normal(d) and d["pkg"] not in seen:
                        seen.add(d["pkg"])
                        todo.append(d["pkg"])
            bad = sorted({packages[i]["name"] for i in seen} & FORBIDDEN_IN_CORE)
            if bad:
                problems.append(f"detour-core's dependency tree holds {', '.join(bad)}")
    return problems


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    srcs = sys.argv[1:]
    failed = 0
    if not srcs:
        for problem in check_crates(root):
            failed += 1
            print(f"crate layering: {problem}", file=sys.stderr)
        if not failed:
            print(f"crate layering: {len(ALLOWED)} crates as the Layout draws them")
        srcs = [os.path.join(root, "src")]
        crates = os.path.join(root, "crates")
        if os.path.isdir(crates):
            srcs += sorted(
                os.path.join(crates, c, "src")
                for c in os.listdir(crates)
                if os.path.isdir(os.path.join(crates, c, "src"))
            )
    for src in srcs:
        for component, inner in check(src):
            failed += 1
            print(f"module cycle in {os.path.relpath(src, root)}:", file=sys.stderr)
            for v in sorted(component):
                print(f"  {name(v)} -> {', '.join(name(w) for w in inner[v])}", file=sys.stderr)
    checked = len(srcs)
    if failed:
        print(f"architecture: {failed} problems in {checked} crates", file=sys.stderr)
        return 1
    print(f"module cycles: none in {checked} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
