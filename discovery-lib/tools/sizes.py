#!/usr/bin/env python3
"""The library's largest files and functions, in lines, without
`#[cfg(test)]` blocks (a test module, or a test-only item). Comments and
blank lines count: they are part of what a reader reads.

Usage: python3 discovery-lib/tools/sizes.py [discovery-lib/src] [N]
"""
import os
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "src")
src = os.path.normpath(src)
top = int(sys.argv[2]) if len(sys.argv) > 2 else 10


def block_end(text, open_brace):
    """Index just past the `}` matching the `{` at `open_brace` (strings,
    chars and comments skipped)."""
    depth, j, n = 0, open_brace, len(text)
    while j < n:
        c = text[j]
        if text.startswith('//', j):
            j = text.find('\n', j)
            j = n if j < 0 else j
            continue
        if c == '"':
            j += 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == '\\' else 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[j:j + 4]):
            j = text.index("'", j + 1 + (text[j + 1] == '\\'))
        elif c == '{':
            depth += 1
        elif c == '}':
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return n


def strip_tests(text):
    out, i = [], 0
    for m in re.finditer(r'#\[cfg\(test\)\]', text):
        if m.start() < i:
            continue
        brace = text.find('{', m.end())
        semi = text.find(';', m.end())
        out.append(text[i:m.start()])
        if semi != -1 and (brace == -1 or semi < brace):
            i = semi + 1  # `#[cfg(test)] use …;` or `mod tests;`
        else:
            i = block_end(text, brace)
    out.append(text[i:])
    return ''.join(out)


files, fns = [], []
for root, _, names in os.walk(src):
    for f in names:
        if not f.endswith('.rs'):
            continue
        path = os.path.join(root, f)
        rel = os.path.relpath(path, src)
        text = strip_tests(open(path).read())
        files.append((text.count('\n'), rel))
        for m in re.finditer(r'^[ \t]*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?fn\s+(\w+)', text, re.M):
            brace = text.find('{', m.end())
            semi = text.find(';', m.end())
            if brace == -1 or (semi != -1 and semi < brace and '(' not in text[m.end():semi]):
                continue
            # A declaration without a body (`fn f(…);` in a trait) ends at `;`
            # before any `{`.
            head = text[m.end():brace]
            if ';' in head and head.count('(') == head.count(')'):
                continue
            end = block_end(text, brace)
            start = text.rfind('\n', 0, m.start()) + 1
            lines = text[start:end].count('\n') + 1
            line_no = text[:m.start()].count('\n') + 1
            fns.append((lines, f"{rel}:{line_no} {m.group(1)}"))

files.sort(reverse=True)
fns.sort(reverse=True)
print(f"largest files (lines without #[cfg(test)]), of {len(files)}, total {sum(n for n, _ in files)}:")
for n, f in files[:top]:
    print(f"  {n:5} {f}")
print(f"largest functions, of {len(fns)}:")
for n, f in fns[:top]:
    print(f"  {n:5} {f}")
