#!/usr/bin/env python3
"""Draws the dependency picture of src/: which area (top-level module, or a second level
under the big ones) uses which, the import loops between areas, and the layers.

    python3 tools/deps.py            # areas, their arrows, loops and layers
    python3 tools/deps.py --files    # the same at file level (loops only)
    python3 tools/deps.py --check    # exit 1 if any loop between areas exists

It reads `crate::`, `super::` and `self::` paths in code (use trees and inline paths);
tests (`#[cfg(test)] mod tests`) are skipped. It is a reading aid and CI's guard against
new loops, not a compiler: a path it cannot place is ignored.
"""

import os
import re
import sys
from collections import defaultdict

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Areas split one level deeper: big folders whose parts sit on different layers.
SPLIT = {"api", "sync", "rooms", "streams", "ephemeral", "accounts"}


def module_files():
    """Maps module paths (tuples) to files."""
    modules = {}
    for root, _, files in os.walk(SRC):
        for name in files:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, name), SRC)
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            modules[tuple(parts)] = os.path.join(root, name)
    return modules


def strip_tests(text):
    index = text.find("#[cfg(test)]")
    return text if index < 0 else text[:index]


def expand_use(tree):
    """Expands a use tree (`a::{b, c::{d}}`) into paths."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, rest):
        if not rest:
            return
        brace = rest.find("{")
        if brace < 0:
            out.append(prefix + rest)
            return
        head = rest[:brace]
        body = rest[brace + 1 : rest.rfind("}")]
        depth, start, items = 0, 0, []
        for i, ch in enumerate(body):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                items.append(body[start:i])
                start = i + 1
        items.append(body[start:])
        for item in items:
            walk(prefix + head, item)

    walk("", tree)
    return [p.split(" as ")[0] for p in out if p]


def paths_in(text):
    text = strip_tests(text)
    text = re.sub(r"//[^\n]*", "", text)
    paths = []
    for match in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand_use(match.group(1)))
    # Inline paths; a path that opens a use tree (`crate::api::{...}`) was expanded above.
    for match in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)(?!::|\w)", text):
        paths.append(match.group(1))
    return paths


def resolve(path, here, modules):
    """The module (tuple) a path names, from the module `here`."""
    parts = path.split("::")
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    elif parts[0] in ("super", "self"):
        base = list(here)
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
    else:
        return None
    full = base + parts
    while full and tuple(full) not in modules:
        full = full[:-1]
    return tuple(full) if full else None


def area(module):
    if not module:
        return None
    if module[0] in SPLIT and len(module) > 1:
        return module[0] + "/" + module[1]
    return module[0]


def graph(level):
    modules = module_files()
    edges = defaultdict(set)
    for module, path in modules.items():
        with open(path) as f:
            text = f.read()
        source = module if level == "files" else area(module)
        if source is None:
            continue
        for used in paths_in(text):
            target = resolve(used, module, modules)
            if target is None:
                continue
            target = target if level == "files" else area(target)
            if target and target != source:
                edges[source].add(target)
        edges.setdefault(source, set())
    return edges


def sccs(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in list(edges):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def layers(edges):
    """Layer 0 uses nothing; each area sits one above the highest it uses (loops collapsed)."""
    memo = {}

    def level(v, seen):
        if v in memo:
            return memo[v]
        if v in seen:
            return 0
        seen = seen | {v}
        value = 1 + max((level(w, seen) for w in edges.get(v, ())), default=-1)
        memo[v] = value
        return value

    for v in edges:
        level(v, frozenset())
    return memo


def name(node):
    return "/".join(node) if isinstance(node, tuple) else node


def main():
    files = "--files" in sys.argv
    edges = graph("files" if files else "areas")
    loops = sccs(edges)
    if "--check" in sys.argv:
        for loop in loops:
            print("loop:", " ".join(sorted(name(n) for n in loop)))
        sys.exit(1 if loops else 0)
    if not files:
        for source in sorted(edges):
            print(f"{source:22} -> {' '.join(sorted(edges[source]))}")
        depth = layers(edges)
        print("\nlayers (0 uses no other area):")
        for value in sorted(set(depth.values())):
            print(f"  {value:2}: {' '.join(sorted(v for v in depth if depth[v] == value))}")
    print(f"\n{len(loops)} import loop(s)")
    for loop in loops:
        print(f"  {len(loop)}: {' '.join(sorted(name(n) for n in loop))}")


if __name__ == "__main__":
    main()
