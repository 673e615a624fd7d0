#!/usr/bin/env python3
"""Checks the crate's module graph: no import circles between modules, and no source file over
the line limit. A module is a file under src/ (a folder's mod.rs is the folder's module); an
edge A -> B is a `crate::b::...` path used in A (tests inside a module count: they are part of
the file a reader has to understand). Prints the circles and the long files; exits 1 if any.

    scripts/check-modules.py [--max-lines 600]
"""
import argparse
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "src"


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts) or "crate"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-lines", type=int, default=600)
    args = ap.parse_args()
    files = sorted(root.rglob("*.rs"))
    modules = {module_of(f): f for f in files if f.name not in ("main.rs", "lib.rs")}
    # Child test files (`mod tests;` in a folder) belong to their parent module.
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for m, f in modules.items():
        text = f.read_text()
        # `use crate::{a::b, c}` groups are expanded crudely: every path after `crate::`.
        paths = re.findall(r"crate::([a-z_][a-z0-9_:]*)", text)
        for group in re.findall(r"crate::\{([^}]*)\}", text, flags=re.S):
            paths += [p.strip() for p in group.split(",")]
        for p in paths:
            segs = [s for s in p.split("::") if s]
            # The longest prefix of the path that is a module.
            target = None
            for n in range(len(segs), 0, -1):
                cand = "::".join(segs[:n])
                if cand in modules:
                    target = cand
                    break
            if target and target != m and not target.startswith(m + "::") and not m.startswith(target + "::"):
                edges[m].add(target)
    # Circles: strongly connected components with more than one module.
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            strong(v)
    bad = False
    for comp in comps:
        bad = True
        inner = [f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp]
        print("import circle: " + "; ".join(inner))
    for f in files:
        n = sum(1 for _ in f.open())
        if n > args.max_lines:
            bad = True
            print(f"{f.relative_to(root.parent)}: {n} lines (over {args.max_lines})")
    if not bad:
        print(f"{len(modules)} modules, no import circle, no file over {args.max_lines} lines")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
