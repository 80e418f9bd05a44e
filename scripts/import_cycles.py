#!/usr/bin/env python3
"""Import cycles between the top-level modules of each crate of the workspace.

Module A imports B when a non-test line of a file of A (A.rs, or A/*.rs below it) names
`crate::B` (or `super::B` from a top-level file). A cycle means two modules that can only be
read together; a child module using its parent (repo/audit.rs -> repo) is not one.
Usage: scripts/import_cycles.py [ROOT]; prints each crate's verdict, exits 1 on any cycle.
"""
import os, re, sys
from collections import defaultdict
crates = {'dr-core':'dr-core/src','dr-crypto':'dr-crypto/src','dr-storage':'dr-storage/src','dr-db':'dr-db/src','dr-files':'dr-files/src','dr':'src','drctl':'src/bin/drctl'}
root = sys.argv[1] if len(sys.argv)>1 else '.'
found = False
def strip_tests(text):
    i = text.find('#[cfg(test)]')
    return text if i < 0 else text[:i]
for crate, src in crates.items():
    base = os.path.join(root, src)
    g = defaultdict(set)
    for dp, dn, fn in os.walk(base):
        if crate == 'dr' and 'bin' in os.path.relpath(dp, base).split(os.sep): continue
        for f in fn:
            if not f.endswith('.rs'): continue
            rel = os.path.relpath(os.path.join(dp, f), base)
            top = rel.split(os.sep)[0].removesuffix('.rs')
            if top in ('lib','main'): continue
            text = strip_tests(open(os.path.join(dp,f)).read())
            text = re.sub(r'//.*', '', text)
            for m in re.finditer(r'crate::(\{[^}]*\}|\w+)', text):
                grp = m.group(1)
                names = re.findall(r'(\w+)', grp) if grp.startswith('{') else [grp]
                for n in names:
                    if n != top: g[top].add(n)
            # super:: from a top-level file's child resolves to the top module itself; from top-level means crate
            if os.sep not in rel:
                for m in re.finditer(r'\bsuper::(\w+)', text):
                    if m.group(1) != top: g[top].add(m.group(1))
    mods = set(g) | {n for s in g.values() for n in s}
    # Tarjan SCC
    idx = {}; low = {}; st = []; on = set(); out = []; c = [0]
    def sc(v):
        idx[v] = low[v] = c[0]; c[0]+=1; st.append(v); on.add(v)
        for w in g.get(v, ()):
            if w not in idx: sc(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(mods):
        if v not in idx: sc(v)
    print(f"{crate}: {'no cycles' if not out else out}")
    found = found or bool(out)
sys.exit(1 if found else 0)
