#!/usr/bin/env python3
"""check-layers: the crate's module graph has no upward import and no cycle.

Reads every `.rs` file under `src/` as text (no Rust parser; standard library
only), except `src/main.rs` (the binary, which may import anything of the
library) and `src/bin/` (other binaries). Each file is a module:
`src/lib.rs` is the crate root, `src/a.rs` and `src/a/mod.rs` are `a`,
`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`.

A reference is a `crate::...`, `super::...` or `self::...` path, in a `use`
declaration (grouped and multi-line trees included) or inline in code
(`crate::control::Event::Outcome { .. }`). Comments and string/char literals
are blanked out first. `super::` is resolved against the module the path is
written in, inline `mod name { .. }` blocks included, so `use super::*;`
inside `#[cfg(test)] mod tests { .. }` is the file's own module. Test modules
count like any other code. Each path is resolved to its longest prefix that
is a module (a file); the rest are items. Bare paths (`use child::X;` in a
mod.rs) are not read: in Rust 2018 they can only name the module's own
children or an external crate, never a sibling or a parent.

Checks:
  1. Layers. LAYERS below gives every top-level module a layer, lowest first.
     A reference from a module to a module of a higher layer is an error
     (upward import). A top-level module missing from the table, and a table
     entry with no module in src/, are errors too, so the table cannot drift.
  2. Cycles, found by a strongly-connected-components pass and reported as
     paths `a -> b -> a` (one shortest cycle through every edge that lies on
     a cycle, duplicates dropped):
       - among modules at depth <= 2 (`request`, `request::walk`,
         `control::splits`; deeper ones are folded into their depth-2
         ancestor). A reference between a module and its own ancestor or
         descendant is not an edge: a parent declaring and using its child,
         and a child using `super::` items, are the normal Rust shape;
       - among the depth-3 children inside each depth-2 folder
         (`request::ws::request -> request::ws::outcome -> ...`);
       - among top-level modules, for a cycle that the depth-2 graph does
         not show (e.g. `a::x -> b -> a`, where `a` -> `a::x` is the parent
         edge that graph leaves out).
  3. Unresolved paths. `crate::x::..` where `x` is neither a module file
     nor a name written in lib.rs (a `pub use` re-export, an item) nor a
     macro_rules! name is reported: the checker cannot see where it points,
     so it would otherwise pass over it (rustc rejects it too; it shows up
     while modules are being moved).
  References to the crate root itself (`crate::Item`) and from it (lib.rs
  only declares the modules) are outside the layers.

Exit status: 0 clean, 1 a problem was found, 2 usage or input error.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

# The layer table, lowest first. A module may import from its own layer
# (without a cycle) and from any lower layer, never from a higher one.
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["config", "error", "metrics", "logfmt", "headers", "outcome", "openai", "serve", "mock", "budget", "alloc"]),
    ("clients and identity", ["upstream", "auth", "limit", "accounting", "otel", "audit"]),
    ("routing", ["routing"]),
    ("control", ["control"]),
    ("shared request state", ["state"]),
    ("the request path", ["request"]),
    ("operations", ["ops"]),
    ("assembly", ["app", "public"]),
]

REPO_ROOT = Path(__file__).resolve().parent.parent

IDENT = r"(?:r#)?[A-Za-z_][A-Za-z0-9_]*"
Mod = tuple  # a module path: () is the crate root, ("a", "b") is a::b


def fmt(m: Mod) -> str:
    return "::".join(m) if m else "crate"


# ---------------------------------------------------------------- lexing


def blank_comments_and_literals(src: str) -> str:
    """Return src with comments and string/char literals replaced by spaces.

    Newlines are kept, so offsets and line numbers stay the same. Handles
    `//` (incl. `///`, `//!`), nested `/* */`, "..." with escapes, raw
    strings r"..", r#".."#, byte/C string prefixes, and char literals as
    opposed to lifetimes ('a' vs 'a).
    """
    out = list(src)
    n = len(src)
    i = 0

    def blank(a: int, b: int) -> None:
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    def ident_char(c: str) -> bool:
        return c.isalnum() or c == "_"

    while i < n:
        c = src[i]
        nxt = src[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
            continue
        if c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
            continue
        # raw strings: r"..", r#".."#, br#".."#, cr".."
        if c in "rbc" and (i == 0 or not ident_char(src[i - 1])):
            m = re.compile(r'(?:br|cr|r)(#*)"').match(src, i)
            if m:
                close = '"' + m.group(1)
                j = src.find(close, m.end())
                j = n if j < 0 else j + len(close)
                blank(i, j)
                i = j
                continue
            if c in "bc" and nxt == '"':
                i += 1  # b"..", c"..": the prefix stays, the string is blanked below
                c, nxt = '"', src[i + 1] if i + 1 < n else ""
        if c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
            blank(i, j)
            i = j
            continue
        if c == "'":
            # char literal ('x', '\n', '\u{7f}', '"', '{') or a lifetime ('a, 'static)
            if nxt == "\\":
                j = i + 2
                while j < n and src[j] != "'" and src[j] != "\n":
                    j += 2 if src[j] == "\\" else 1
                blank(i, j + 1)
                i = j + 1
                continue
            if i + 2 < n and src[i + 2] == "'" and nxt != "\n":
                blank(i, i + 3)
                i += 3
                continue
            i += 1
            continue
        i += 1
    return "".join(out)


# ------------------------------------------------------------ references


@dataclass
class Ref:
    src_mod: Mod        # module the reference is written in (file module)
    target: Mod         # resolved target module
    path: str           # the path as written, for messages
    file: Path
    line: int


def line_of(text: str, offset: int, cache: dict) -> int:
    starts = cache.get("starts")
    if starts is None:
        starts = [0] + [m.end() for m in re.finditer("\n", text)]
        cache["starts"] = starts
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= offset:
            lo = mid
        else:
            hi = mid - 1
    return lo + 1


def inline_mod_scopes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of every inline `mod name { .. }` block."""
    scopes = []
    stack: list[tuple[int, int, str]] = []  # (brace depth outside, start, name)
    depth = 0
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{|[{}]", text):
        if m.group(0) == "}":
            depth -= 1
            if stack and stack[-1][0] == depth:
                _, start, name = stack.pop()
                scopes.append((start, m.end(), name))
            continue
        if m.group(1):
            stack.append((depth, m.start(), m.group(1).removeprefix("r#")))
        depth += 1
    return scopes


def scope_at(scopes: list[tuple[int, int, str]], offset: int) -> tuple[str, ...]:
    inner = [(s, name) for s, e, name in scopes if s <= offset < e]
    return tuple(name for _, name in sorted(inner))


USE_RE = re.compile(r"(?<![A-Za-z0-9_#$])use(?![A-Za-z0-9_])")
TOKEN_RE = re.compile(r"\s*(::|\{|\}|,|\*|;|\$?" + IDENT + r")")


def parse_use_tree(text: str, pos: int) -> tuple[list[tuple[list[str], int]], int]:
    """Parse a use tree starting at pos. Returns (leaves, end offset).

    Each leaf is (segments, offset of its last segment). `self` in a group
    stands for the group's prefix; `as x` renames and `*` are dropped.
    """
    toks: list[tuple[str, int]] = []
    while True:
        m = TOKEN_RE.match(text, pos)
        if not m:
            break
        toks.append((m.group(1), m.start(1)))
        pos = m.end()
        if m.group(1) == ";":
            break
    leaves: list[tuple[list[str], int]] = []
    k = 0

    def tree(prefix: list[str], at: int) -> None:
        nonlocal k
        segs = list(prefix)
        last = at
        while k < len(toks):
            t, off = toks[k]
            if t == "::":
                k += 1
            elif t == "{":
                k += 1
                while k < len(toks) and toks[k][0] != "}":
                    if toks[k][0] == ",":
                        k += 1
                        continue
                    tree(segs, last)
                k += 1  # the "}"
                return
            elif t == "*":
                k += 1
                leaves.append((segs, off))
                return
            elif t in (",", "}", ";"):
                break
            elif t == "as":
                k += 2  # "as name"
                break
            else:
                if t != "self" or not segs:  # `self` leads a path, or is the group's prefix
                    segs.append(t.removeprefix("r#"))
                last = off
                k += 1
        leaves.append((segs, last))

    while k < len(toks) and toks[k][0] != ";":
        before = k
        tree([], pos)
        if k < len(toks) and toks[k][0] == ",":
            k += 1
        if k == before:
            k += 1
    return leaves, pos


INLINE_RE = re.compile(
    r"(?<![A-Za-z0-9_:#])\$?(crate|super|self)((?:\s*::\s*(?:" + IDENT + r"))+)"
)


def find_paths(text: str) -> list[tuple[list[str], int, bool]]:
    """Every crate-/super-/self-relative path in blanked text.

    Returns (segments, offset, is a macro call `crate::name!`).
    """
    found: list[tuple[list[str], int, bool]] = []
    spans: list[tuple[int, int]] = []
    for m in USE_RE.finditer(text):
        leaves, end = parse_use_tree(text, m.end())
        spans.append((m.start(), end))
        for segs, off in leaves:
            segs = [s.lstrip("$") for s in segs]
            if segs and segs[0] in ("crate", "super", "self"):
                found.append((segs, off, False))
    # inline paths outside `use` declarations
    rest = list(text)
    for a, b in spans:
        for k in range(a, b):
            if rest[k] != "\n":
                rest[k] = " "
    rest_text = "".join(rest)
    for m in INLINE_RE.finditer(rest_text):
        segs = [m.group(1)] + [s.strip() for s in m.group(2).split("::") if s.strip()]
        macro = rest_text[m.end():m.end() + 1] == "!"
        found.append(([s.removeprefix("r#") for s in segs], m.start(), macro))
    return found


def resolve(segs: list[str], here: Mod, modules: set) -> tuple[Mod, bool]:
    """Resolve a path to the longest prefix that is a module. (module, ok)."""
    i = 0
    if segs[0] == "crate":
        base: list[str] = []
        i = 1
    else:
        base = list(here)
        if segs[0] == "self":
            i = 1
        while i < len(segs) and segs[i] == "super":
            if not base:
                return (), False
            base.pop()
            i += 1
    full = base + segs[i:]
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in modules:
            return tuple(full[:n]), True
    return (), True


# --------------------------------------------------------------- modules


def module_of(rel: Path) -> Mod | None:
    parts = list(rel.parts)
    if parts == ["main.rs"] or parts[0] == "bin":
        return None
    if parts == ["lib.rs"]:
        return ()
    parts[-1] = parts[-1][:-3]
    if parts[-1] == "mod":
        parts.pop()
    return tuple(p.removeprefix("r#") for p in parts)


@dataclass
class Crate:
    src: Path
    files: dict = field(default_factory=dict)       # Mod -> Path
    modules: set = field(default_factory=set)       # file modules and their ancestors
    refs: list = field(default_factory=list)        # Ref, to another module
    unresolved: list = field(default_factory=list)  # Ref to a name that is no module nor root item


def scan(src: Path) -> Crate:
    crate = Crate(src)
    for p in sorted(src.rglob("*.rs")):
        mod = module_of(p.relative_to(src))
        if mod is None:
            continue
        crate.files[mod] = p
        for n in range(len(mod) + 1):
            crate.modules.add(mod[:n])
    texts = {mod: blank_comments_and_literals(p.read_text(encoding="utf-8"))
             for mod, p in sorted(crate.files.items())}
    # names a `crate::name` path may mean besides a module: whatever lib.rs
    # names (items, `pub use` re-exports) apart from its `mod x;` lines, and
    # every macro_rules! name (a #[macro_export] macro lives at the root)
    root_text = re.sub(r"\bmod\s+" + IDENT + r"\s*;", " ", texts.get((), ""))
    root_names = set(re.findall(IDENT, root_text))
    for text in texts.values():
        root_names.update(re.findall(r"\bmacro_rules!\s*(" + IDENT + ")", text))
    for mod, text in texts.items():
        p = crate.files[mod]
        scopes = inline_mod_scopes(text)
        cache: dict = {}
        for segs, off, macro in find_paths(text):
            here = mod + scope_at(scopes, off)
            target, ok = resolve(segs, here, crate.modules)
            r = Ref(mod, target, "::".join(segs), p, line_of(text, off, cache))
            if not ok or (segs[0] == "crate" and target == () and len(segs) > 1
                          and segs[1] not in root_names and not macro):
                crate.unresolved.append(r)
                continue
            if target != mod:
                crate.refs.append(r)
    return crate


# ------------------------------------------------------------------ graph


def is_related(a: Mod, b: Mod) -> bool:
    """a is b, or an ancestor or descendant of b."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def sccs(nodes, edges) -> list[list]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict = {}
    low: dict = {}
    on: set = set()
    stack: list = []
    out: list[list] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def cycles(edges: dict) -> list[list]:
    """One shortest cycle through every edge that lies on a cycle, deduplicated.

    Each cycle is a node list [a, b, ..., a].
    """
    nodes = set(edges) | {w for ws in edges.values() for w in ws}
    found: list[list] = []
    seen: set = set()
    for comp in sccs(nodes, edges):
        if len(comp) < 2:
            continue
        members = set(comp)
        for u in comp:
            for v in sorted(edges.get(u, ())):
                if v not in members:
                    continue
                # shortest path v -> u inside the component
                prev = {v: None}
                q = deque([v])
                while q and u not in prev:
                    x = q.popleft()
                    for y in sorted(edges.get(x, ())):
                        if y in members and y not in prev:
                            prev[y] = x
                            q.append(y)
                path = [u]
                while path[-1] != v:
                    path.append(prev[path[-1]])
                path.reverse()  # v ... u
                cyc = [u] + path  # u -> v -> ... -> u
                ring = cyc[:-1]
                k = ring.index(min(ring))
                key = tuple(ring[k:] + ring[:k])
                if key not in seen:
                    seen.add(key)
                    found.append(list(key) + [key[0]])
    return sorted(found, key=lambda c: (len(c), c))


def fold(m: Mod, depth: int) -> Mod:
    return m[:depth]


# ------------------------------------------------------------------ layers


def parse_layers(arg: str) -> list[tuple[str, list[str]]]:
    """--layers: JSON text or a JSON file.

    Forms: [["a", "b"], ["c"]] (lowest first); [{"name": "x", "modules": [..]}, ..];
    {"a": 0, "b": 0, "c": 1} (module -> layer number).
    """
    s = arg.strip()
    if not s.startswith(("[", "{")):
        s = Path(arg).read_text(encoding="utf-8")
    data = json.loads(s)
    if isinstance(data, dict):
        by: dict[int, list[str]] = defaultdict(list)
        for name, n in data.items():
            by[int(n)].append(name)
        return [("", sorted(by[n])) for n in sorted(by)]
    table = []
    for k, entry in enumerate(data):
        if isinstance(entry, dict):
            table.append((str(entry.get("name", "")), list(entry["modules"])))
        elif isinstance(entry, str):
            table.append((entry, [entry]))
        else:
            table.append(("", list(entry)))
    return table


# ------------------------------------------------------------------ check


def edge_counts(crate: Crate, depth: int | None, within: Mod | None = None) -> dict:
    """{(a, b): [Ref, ..]} for the graph at the given depth.

    depth None: top-level modules (crate root left out). within: only
    references between modules strictly below that folder.
    """
    out: dict = defaultdict(list)
    for r in crate.refs:
        a, b = r.src_mod, r.target
        if not a or not b:
            continue
        if depth is None:
            a, b = a[:1], b[:1]
        else:
            if is_related(a, b):
                continue
            if within is not None:
                n = len(within)
                if len(a) <= n or len(b) <= n or a[:n] != within or b[:n] != within:
                    continue
            a, b = fold(a, depth), fold(b, depth)
        if a != b:
            out[(a, b)].append(r)
    return out


def adjacency(counts: dict) -> dict:
    adj: dict = defaultdict(set)
    for a, b in counts:
        adj[a].add(b)
    return adj


def rel(p: Path, root: Path) -> str:
    try:
        return os.path.relpath(p, root)
    except ValueError:
        return str(p)


def describe_cycle(cyc: list, counts: dict, root: Path) -> str:
    parts = []
    for a, b in zip(cyc, cyc[1:]):
        rs = sorted(counts[(a, b)], key=lambda r: (str(r.file), r.line))
        more = f" (+{len(rs) - 1} more)" if len(rs) > 1 else ""
        parts.append(f"{fmt(a)} -> {fmt(b)} at {rel(rs[0].file, root)}:{rs[0].line}{more}")
    return " -> ".join(fmt(m) for m in cyc) + "  [" + "; ".join(parts) + "]"


def check(crate: Crate, table: list[tuple[str, list[str]]], root: Path) -> tuple[list[str], dict]:
    problems: list[str] = []
    stats = {"upward": 0, "missing": 0, "stale": 0, "duplicate": 0, "cycles": 0,
             "unresolved": len(crate.unresolved)}
    layer_of: dict[str, int] = {}
    for n, (_, mods) in enumerate(table):
        for m in mods:
            if m in layer_of:
                problems.append(f"layer table: '{m}' is in layer {layer_of[m]} and layer {n}")
                stats["duplicate"] += 1
            else:
                layer_of[m] = n

    def lname(n: int) -> str:
        return f"layer {n} {table[n][0]}".rstrip()

    tops = sorted({m[0] for m in crate.files if m})
    for t in tops:
        if t not in layer_of:
            f = crate.files.get((t,)) or crate.src / t
            problems.append(f"{rel(f, root)}: module '{t}' is not in the layer table: add it to the layer table")
            stats["missing"] += 1
    for m in sorted(layer_of, key=lambda m: (layer_of[m], m)):
        if m not in tops:
            problems.append(
                f"layer table: '{m}' ({lname(layer_of[m])}) has no module in {rel(crate.src, root)}/: "
                "remove it from the layer table (stale)"
            )
            stats["stale"] += 1

    for r in sorted(crate.unresolved, key=lambda r: (str(r.file), r.line)):
        problems.append(
            f"{rel(r.file, root)}:{r.line}: unresolved reference: {r.path} names no module of "
            f"{rel(crate.src, root)}/ (nor an item of the crate root), so it cannot be checked"
        )
    for r in sorted(crate.refs, key=lambda r: (str(r.file), r.line)):
        if not r.src_mod or not r.target:
            continue
        la, lb = layer_of.get(r.src_mod[0]), layer_of.get(r.target[0])
        if la is None or lb is None or lb <= la:
            continue
        problems.append(
            f"{rel(r.file, root)}:{r.line}: upward import: {fmt(r.src_mod)} ({lname(la)}) -> "
            f"{fmt(r.target)} ({lname(lb)}) via {r.path}"
        )
        stats["upward"] += 1

    c2 = edge_counts(crate, 2)
    cyc2 = cycles(adjacency(c2))
    for cyc in cyc2:
        problems.append(f"cycle: {describe_cycle(cyc, c2, root)}")
    # cycles among the depth-3 children of every depth-2 folder
    cyc3_lines = []
    for folder in sorted(m for m in crate.modules if len(m) == 2):
        c3 = edge_counts(crate, 3, within=folder)
        for cyc in cycles(adjacency(c3)):
            cyc3_lines.append(f"cycle inside {fmt(folder)}: {describe_cycle(cyc, c3, root)}")
    problems += cyc3_lines
    # top-level cycles the depth-2 graph does not show: those whose every
    # edge is an edge of one depth-2 cycle, projected to top-level modules, are left out
    projected = [{(a[0], b[0]) for a, b in zip(c, c[1:]) if a[0] != b[0]} for c in cyc2]
    c1 = edge_counts(crate, None)
    cyc1 = []
    for c in cycles(adjacency(c1)):
        own = {(a[0], b[0]) for a, b in zip(c, c[1:])}
        if not any(own <= p for p in projected):
            cyc1.append(c)
    for cyc in cyc1:
        problems.append(f"cycle between top-level modules: {describe_cycle(cyc, c1, root)}")
    stats["cycles"] = len(cyc2) + len(cyc3_lines) + len(cyc1)
    return problems, stats


def print_graph(crate: Crate, table, out) -> None:
    layer_of = {m: n for n, (_, mods) in enumerate(table) for m in mods}
    counts = edge_counts(crate, None)
    by_src: dict = defaultdict(list)
    for (a, b), rs in counts.items():
        by_src[a[0]].append((b[0], len(rs)))
    far = len(table)
    order = sorted({m[0] for m in crate.files if m}, key=lambda m: (layer_of.get(m, far), m))
    current = None
    for m in order:
        n = layer_of.get(m, far)
        if n != current:
            current = n
            title = f"layer {n} {table[n][0]}".rstrip() if n < far else "not in the layer table"
            print(f"# {title}", file=out)
        targets = sorted(by_src.get(m, []), key=lambda t: (layer_of.get(t[0], far), t[0]))
        if not targets:
            print(f"{m} (imports no other module)", file=out)
        for b, k in targets:
            print(f"{m} -> {b} {k}", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="check-layers.py",
        description=(
            "Prove the crate's module graph has no upward import and no cycle. "
            "Reads src/**/*.rs as text (src/main.rs excluded), finds every crate::, "
            "super:: and self:: path (use trees and inline paths; comments and "
            "strings skipped), resolves it to a module, then checks that no module "
            "imports a higher layer of the layer table, that the table names every "
            "top-level module and nothing else, and that there is no import cycle "
            "among modules at depth <= 2, among the depth-3 children of a depth-2 "
            "folder, or among top-level modules, and that every crate:: path resolves. "
            "Exit 0 clean, 1 problems, 2 bad input."
        ),
    )
    ap.add_argument("--src", type=Path, default=REPO_ROOT / "src",
                    help="the crate's source folder (default: src/ of this repository)")
    ap.add_argument("--layers", metavar="JSON|FILE",
                    help='layer table instead of the built-in one, lowest first: JSON text or a JSON file, '
                         'e.g. \'[["config","error"],["upstream"],["app"]]\' or \'{"config":0,"app":1}\'')
    ap.add_argument("--graph", action="store_true",
                    help="print the top-level module edges (a -> b COUNT) by layer, and exit")
    args = ap.parse_args(argv)

    src = args.src
    if not src.is_dir():
        print(f"check-layers: {src} is not a directory", file=sys.stderr)
        return 2
    try:
        table = parse_layers(args.layers) if args.layers else LAYERS
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"check-layers: bad --layers: {e}", file=sys.stderr)
        return 2
    try:
        crate = scan(src)
    except (OSError, UnicodeDecodeError) as e:
        print(f"check-layers: cannot read {src}: {e}", file=sys.stderr)
        return 2
    if not crate.files:
        print(f"check-layers: no .rs files under {src}", file=sys.stderr)
        return 2
    shown_root = src.resolve().parent  # paths are shown as src/a/b.rs
    if args.graph:
        print_graph(crate, table, sys.stdout)
        return 0
    problems, stats = check(crate, table, shown_root)
    head = f"check-layers: {len(crate.files)} modules, {len(crate.refs)} references, {len(table)} layer{'s' * (len(table) != 1)}"
    if not problems:
        print(f"{head}: no upward import, no cycle")
        return 0
    for p in problems:
        print(p)
    parts = [f"{stats['upward']} upward import{'s' * (stats['upward'] != 1)}",
             f"{stats['cycles']} cycle{'s' * (stats['cycles'] != 1)}",
             f"{stats['missing']} module{'s' * (stats['missing'] != 1)} missing from the layer table",
             f"{stats['stale']} stale table entr{'ies' if stats['stale'] != 1 else 'y'}"]
    if stats["unresolved"]:
        parts.append(f"{stats['unresolved']} unresolved reference{'s' * (stats['unresolved'] != 1)}")
    if stats["duplicate"]:
        parts.append(f"{stats['duplicate']} duplicate table entries")
    print(f"{head}: FAILED: " + ", ".join(parts))
    return 1


if __name__ == "__main__":
    sys.exit(main())
