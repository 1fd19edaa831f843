#!/usr/bin/env python3
"""The library's import structure, from its `use crate::…` / `use super::…`
lines and inline `crate::…` paths (doc comments, comments and
`#[cfg(test)] mod` blocks left out).

Prints:
  * the files in import circles (strongly connected components of the
    file-level graph: `register/actor.rs` -> `register/lease.rs` counts);
  * every edge between top-level modules that goes from a lower layer to a
    higher one, or sideways between two peers, by the layers below
    (`src/lib.rs`'s "Source layout" describes them);
  * modules not given a layer (a new module must be placed).

Exits 1 if there is a circle, an upward or sideways edge, or an unplaced
module. Usage: python3 discovery-lib/tools/imports.py [discovery-lib/src]
"""
import os
import re
import sys

# Bottom to top. A module may import only from layers below its own.
LAYERS = [
    # Leaves: types and rules every floor shares, in the order they build
    # on each other.
    ["setting", "duration", "retry", "alarm", "insecure"],
    ["error"],
    ["key", "tls_probe", "lease_options"],
    ["node"],
    ["state"],
    # The transport: every etcd request.
    ["pool"],
    ["rpc"],
    # The engines that hold an `Rpc`: the prefix watch, a lease's keep-alive.
    ["watch", "keep_alive"],
    # One lease held for keys, on a keep-alive: both lease holders' lifecycle.
    ["lease_holder"],
    # The features built on them.
    ["register", "lease_group", "members", "config", "merged"],
    # The facade that starts them.
    ["client"],
    # Options that make a facade (`ConnectOptions::connect`).
    ["connect"],
]
LEVEL = {m: i for i, layer in enumerate(LAYERS) for m in layer}

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "src")
src = os.path.normpath(src)


def strip_tests(text):
    out, i = [], 0
    for m in re.finditer(r'#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{', text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {'{': 1, '}': -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return ''.join(out)


def strip_comments(text):
    return re.sub(r'//[^\n]*', '', text)


# Module path (tuple) of every file.
files = {}
for root, _, names in os.walk(src):
    for f in names:
        if not f.endswith('.rs'):
            continue
        rel = os.path.relpath(os.path.join(root, f), src)
        parts = rel[:-3].split(os.sep)
        if parts[-1] in ('mod', 'lib', 'main'):
            parts = parts[:-1]
        files[tuple(parts)] = rel

lib_text = strip_comments(open(os.path.join(src, 'lib.rs')).read())
reexport = {}
for m in re.finditer(r'pub\s+use\s+(?:self::|crate::)?(\w+)::([^;]+);', lib_text):
    for name in re.findall(r'\b([A-Za-z_]\w*)\b', m.group(2)):
        reexport.setdefault(name, m.group(1))


def expand(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']."""
    tree = tree.strip()
    depth = 0
    for i, ch in enumerate(tree):
        if ch == '{':
            if depth == 0:
                head, body = tree[:i], tree[i + 1:tree.rindex('}')]
                items, cur, d = [], '', 0
                for c in body:
                    if c == ',' and d == 0:
                        items.append(cur)
                        cur = ''
                        continue
                    d += {'{': 1, '}': -1}.get(c, 0)
                    cur += c
                items.append(cur)
                return [head + p for it in items if it.strip() for p in expand(it)]
            depth += 1
    return [tree]


def resolve(me, path):
    """The file a path names, from file `me` (a module tuple)."""
    parts = [p for p in re.split(r'\s*::\s*', path) if p]
    if not parts:
        return None
    if parts[0] == 'crate':
        base, rest = (), parts[1:]
    elif parts[0] in ('super', 'self'):
        base = me
        rest = parts
        while rest and rest[0] in ('super', 'self'):
            if rest[0] == 'super':
                base = base[:-1]
            rest = rest[1:]
    else:
        return None
    if not base and rest and tuple(rest[:1]) not in files and rest[0] in reexport:
        rest = [reexport[rest[0]]] + rest[1:]
    # The longest module prefix that is a file.
    best = base if base in files else None
    for k in range(1, len(rest) + 1):
        cand = tuple(base) + tuple(rest[:k])
        if cand in files:
            best = cand
    return best


edges = {}
for mod, rel in files.items():
    if not mod:
        continue  # lib.rs: declarations and re-exports only
    text = strip_comments(strip_tests(open(os.path.join(src, rel)).read()))
    paths = []
    for m in re.finditer(r'\buse\s+((?:crate|super|self)\b[^;]*);', text, re.S):
        paths += expand(m.group(1).replace('\n', ' '))
    for m in re.finditer(r'(?<![\w:])((?:crate|super)(?:::\w+)+)', text):
        paths.append(m.group(1))
    # `use child::…` of a submodule declared here (2018 paths need no `self::`).
    children = {f[len(mod)] for f in files if len(f) == len(mod) + 1 and f[:len(mod)] == mod}
    for m in re.finditer(r'\buse\s+(\w+)\s*::([^;]*);', text, re.S):
        if m.group(1) in children:
            paths += ['self::' + p for p in expand(m.group(1) + '::' + m.group(2).replace('\n', ' '))]
    for p in paths:
        p = re.sub(r'\s+as\s+\w+$', '', p.strip())
        t = resolve(mod, p)
        if t is not None and t != mod:
            edges.setdefault(mod, set()).add(t)

name = lambda m: files[m]

# Tarjan over files.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)


def strong(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            strong(w)
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
        if len(comp) > 1:
            sccs.append(sorted(comp))


for v in sorted(files):
    if v and v not in index:
        strong(v)

bad = 0
in_circles = sorted({name(f) for c in sccs for f in c})
print(f"files in import circles: {len(in_circles)}")
for c in sccs:
    print("  circle:", ", ".join(name(f) for f in c))
    bad += 1

top_edges = {}
for a, ts in edges.items():
    for b in ts:
        if a[0] != b[0] if b else False:
            top_edges.setdefault((a[0], b[0]), set()).add(name(a))
unplaced = sorted({m[0] for m in files if m} - set(LEVEL))
wrong = []
for (a, b), where in sorted(top_edges.items()):
    if a not in LEVEL or b not in LEVEL:
        continue
    if LEVEL[a] <= LEVEL[b]:
        kind = "sideways" if LEVEL[a] == LEVEL[b] else "upward"
        wrong.append(f"  {kind}: {a} (layer {LEVEL[a]}) -> {b} (layer {LEVEL[b]})  in {', '.join(sorted(where))}")
print(f"edges from a lower module to a higher one (or between peers): {len(wrong)}")
for w in wrong:
    print(w)
if unplaced:
    print("modules without a layer:", ", ".join(unplaced))
print(f"{len(files) - 1} files, {sum(len(v) for v in edges.values())} file edges, "
      f"{len(top_edges)} module edges")
sys.exit(1 if sccs or wrong or unplaced else 0)
