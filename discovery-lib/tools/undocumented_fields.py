#!/usr/bin/env python3
"""Count the struct fields of the library's production code that have no
doc comment, as clippy's `missing_docs_in_private_items` finds them (public
fields are already denied by `missing_docs`; test code is not compiled).

Usage (from the workspace root): python3 discovery-lib/tools/undocumented_fields.py [-v]
"""
import collections
import json
import os
import subprocess
import sys

root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# cargo replays the diagnostics of an unchanged crate from its cache, so
# this needs no `touch` to report again.
cmd = ["cargo", "clippy", "-p", "discovery-lib", "--lib", "--message-format=json", "--",
       "-A", "clippy::all", "-W", "clippy::missing_docs_in_private_items"]
out = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
if out.returncode != 0:
    sys.stderr.write(out.stderr)
    sys.exit(out.returncode)
per_file = collections.Counter()
lines = []
for l in out.stdout.splitlines():
    m = json.loads(l)
    if m.get("reason") != "compiler-message":
        continue
    msg = m["message"]
    if msg["message"] != "missing documentation for a field":
        continue
    s = msg["spans"][0]
    per_file[s["file_name"]] += 1
    lines.append(f'{s["file_name"]}:{s["line_start"]}: {s["text"][0]["text"].strip()}')
if "-v" in sys.argv:
    print("\n".join(sorted(lines)))
for f, n in per_file.most_common():
    print(f"{n:4} {f}")
print(f"undocumented fields: {sum(per_file.values())}")
