#!/usr/bin/env python3
"""Fails when a tracked file refers to a path outside the repository.

A clone is all a user has: the build, the tests, the scripts and the docs
must not reach into a folder beside the checkout or into
this machine's own directories. Checked in every tracked text file:

- relative paths (with `..` segments): resolved from the file's folder and
  from the repository root (Rust's `CARGO_MANIFEST_DIR`); one of the two must
  name something that exists inside the repository;
- absolute paths under the folder that holds the checkout (e.g. `/work/…`
  when the checkout is `/work/main`), which a clone elsewhere does not have.

A line that names such a string on purpose (a hostile input in a test) says
`standalone-check: not a path`.

Usage: deploy/standalone-check.py [ROOT]; prints each offending line and
exits 1, or prints a one-line summary and exits 0.
"""

import os
import re
import subprocess
import sys

RELATIVE = re.compile(r"(?<![\w.$/])((?:\.\./)+)([\w.-]*)")


def tracked_files(root):
    out = subprocess.run(
        ["git", "-C", root, "ls-files", "-z"], check=True, capture_output=True
    ).stdout
    return [p for p in out.decode().split("\0") if p]


def resolves_inside(root, base, rel):
    target = os.path.normpath(os.path.join(base, rel))
    inside = target == root or target.startswith(root + os.sep)
    return inside and os.path.exists(target)


def main():
    root = os.path.realpath(sys.argv[1] if len(sys.argv) > 1 else ".")
    parent = os.path.dirname(root)
    absolute = re.compile(re.escape(parent) + r"/[\w.-]+") if parent != "/" else None
    problems = []
    checked = 0
    for path in tracked_files(root):
        if path.startswith("tests/corpus/"):
            continue  # third-party messages, quoted as they are
        full = os.path.join(root, path)
        try:
            with open(full, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if b"\0" in data[:8192]:
            continue
        text = data.decode("utf-8", errors="replace")
        checked += 1
        folder = os.path.dirname(full)
        for n, line in enumerate(text.splitlines(), 1):
            if "standalone-check: not a path" in line:
                continue
            for m in RELATIVE.finditer(line):
                rel = m.group(1) + m.group(2)
                if not (resolves_inside(root, folder, rel) or resolves_inside(root, root, rel)):
                    problems.append(f"{path}:{n}: {rel!r} leaves the repository: {line.strip()}")
            if absolute:
                for m in absolute.finditer(line):
                    if not (m.group(0) + "/").startswith(root + "/"):
                        problems.append(
                            f"{path}:{n}: {m.group(0)!r} is a path beside the checkout: {line.strip()}"
                        )
    for p in problems:
        print(p)
    if problems:
        print(f"standalone check: {len(problems)} reference(s) outside the repository")
        return 1
    print(f"standalone check: {checked} tracked files refer to nothing outside the repository")
    return 0


if __name__ == "__main__":
    sys.exit(main())
