#!/usr/bin/env python3
"""Longest non-test functions of the workspace's crates.

Scans the .rs files under proto, substrate-agent, vn-controller (with core), embedding and cli,
leaving out tests/, benches/ and examples/ directories, build output (target/), files that a
parent declares as `#[cfg(test)] mod x;` (and files named tests.rs), and the items under a
`#[cfg(test)]` attribute. A function's length is its lines from the `fn` line to its closing
brace. Usage: deploy/check-fn-length.py ROOT [N] [LIMIT] (defaults: the 5 longest, limit 120).
"""
import os, re, sys

CRATES = ["proto", "substrate-agent", "vn-controller", "embedding", "cli"]
SKIP_DIRS = {"tests", "benches", "examples", "target"}

def strip(src):
    """Source with comments, strings and char literals blanked (newlines kept)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i)); i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j): depth += 1; j += 2
                elif src.startswith("*/", j): depth -= 1; j += 2
                else: j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j])); i = j
        elif (m := re.match(r'b?r(#*)"', src[i:i + 300])) and (i == 0 or not (src[i-1].isalnum() or src[i-1] == "_")):
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", src[i:j])); i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j])); i = j
        elif c == "'":
            m = re.match(r"'(\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'", src[i:i + 12])
            if m:
                out.append(" " * m.end()); i += m.end()
            else:
                out.append(c); i += 1  # a lifetime
        else:
            out.append(c); i += 1
    return "".join(out)

def match_brace(s, i):
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{": depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0: return j
    return len(s) - 1

def test_ranges(s):
    """Character ranges of items under #[cfg(test)]."""
    out = []
    for m in re.finditer(r"#\[cfg\(test\)\]", s):
        k = m.end()
        semi, brace = s.find(";", k), s.find("{", k)
        if brace >= 0 and (semi < 0 or brace < semi):
            out.append((m.start(), match_brace(s, brace)))
        elif semi >= 0:
            out.append((m.start(), semi))
    return out

def test_files(root):
    """Files that a parent declares under #[cfg(test)] as `mod x;`."""
    out = set()
    for d, dirs, files in walk(root):
        for f in files:
            p = os.path.join(d, f)
            s = strip(open(p, encoding="utf-8", errors="replace").read())
            for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", s):
                name = m.group(1)
                base = d if f in ("mod.rs", "lib.rs", "main.rs") else os.path.join(d, f[:-3])
                out.add(os.path.join(base, name + ".rs"))
                out.add(os.path.join(base, name, "mod.rs"))
    return out

def walk(root):
    for c in CRATES:
        for d, dirs, files in os.walk(os.path.join(root, c)):
            dirs[:] = [x for x in dirs if x not in SKIP_DIRS]
            yield d, dirs, [f for f in files if f.endswith(".rs")]

def main():
    root = sys.argv[1]
    most = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 120
    skip = test_files(root)
    found = []
    for d, _, files in walk(root):
        for f in files:
            p = os.path.join(d, f)
            if p in skip or f == "tests.rs":
                continue
            src = open(p, encoding="utf-8", errors="replace").read()
            s = strip(src)
            tests = test_ranges(s)
            for m in re.finditer(r"\bfn\s+(\w+)", s):
                if any(a <= m.start() <= b for a, b in tests):
                    continue
                # the body: the first `{` at paren depth 0 before a `;`
                depth, j = 0, m.end()
                while j < len(s):
                    ch = s[j]
                    if ch in "([": depth += 1
                    elif ch in ")]": depth -= 1
                    elif ch == ";" and depth == 0: j = -1; break
                    elif ch == "{" and depth == 0: break
                    j += 1
                if j < 0 or j >= len(s):
                    continue
                end = match_brace(s, j)
                first = s.count("\n", 0, m.start()) + 1
                last = s.count("\n", 0, end) + 1
                found.append((last - first + 1, os.path.relpath(p, root), first, m.group(1)))
    found.sort(reverse=True)
    over = [x for x in found if x[0] > limit]
    print(f"{len(found)} functions read; {len(over)} over {limit} lines")
    for n, p, line, name in found[:most]:
        print(f"{n:5d}  {p}:{line}  {name}")

main()
