#!/usr/bin/env python3
"""Writes a git fast-import stream: FILES files in a tree of directories, then COMMITS commits
that each change a few files. Deterministic (seeded). Usage: make-big-repo.py FILES COMMITS"""
import random
import sys

files, commits = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(42)
out = sys.stdout.buffer
paths = [f"src/d{i // 500:03d}/e{(i // 50) % 10}/file{i:05d}.txt" for i in range(files)]


def blob(text):
    data = text.encode()
    out.write(b"data %d\n" % len(data) + data + b"\n")


t = 1700000000
for n in range(commits):
    out.write(b"commit refs/heads/main\n")
    out.write(b"committer bench <bench@example.com> %d +0000\n" % (t + n))
    blob(f"commit {n}")
    changed = paths if n == 0 else rng.sample(paths, 25)
    for path in changed:
        out.write(f"M 100644 inline {path}\n".encode())
        blob(f"{path}\nversion {n}\n" + "x" * 200 + "\n")
    out.write(b"\n")
