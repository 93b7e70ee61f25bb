"""The vit_b encoder under each memory allocator, each in its own process, taking turns.

    python -m devtools.allocators --rounds 3 [--preset vit_b] \
        [--tcmalloc /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4] \
        [--library mimalloc=/path/libmimalloc.so.3] [--library tbbmalloc=/path/libtbbmalloc_proxy.so.2]

Per round, every allocator runs `python -m devtools.encoder_variants --variants fp32` (or
`--variant`: one first image, then `--repeats` more) in a fresh process: glibc as is
(PANOSAMIC_ALLOCATOR=system), glibc tuned in-process (=glibc, `panosamic.allocator`'s mallopt),
and each library preloaded. Prints JSON: per allocator the median over rounds of the median
wall, CPU and kernel (system) seconds of one image, of the first image of a fresh process
("first_*": what a one-off CLI run or an app's first Run pays) and of the later ones, and
ratios to tcmalloc. The kernel time is
the allocator's signature (page faults of memory mapped afresh) and steadier than wall time on
a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.allocators")
    p.add_argument("--preset", default="vit_b")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1, help="timed images per process")
    p.add_argument("--variant", default="fp32", help="devtools.encoder_variants variant (fp32, bf16, ...)")
    p.add_argument("--tcmalloc", default=None, help="libtcmalloc_minimal.so.4 (default: panosamic.allocator finds it)")
    p.add_argument("--library", action="append", default=[], help="NAME=PATH of another preloadable allocator")
    p.add_argument("--env", action="append", default=[], help="NAME:VAR=VALUE extra environment for one allocator")
    args = p.parse_args(argv)

    from panosamic.allocator import find_tcmalloc

    sides: Dict[str, Dict[str, str]] = {"glibc": {"PANOSAMIC_ALLOCATOR": "system"},
                                        "glibc_tuned": {"PANOSAMIC_ALLOCATOR": "glibc"}}
    tcm = args.tcmalloc or find_tcmalloc()
    if tcm:
        sides["tcmalloc"] = {"LD_PRELOAD": tcm, "PANOSAMIC_ALLOCATOR": "system"}
    for item in args.library:
        name, path = item.split("=", 1)
        sides[name] = {"LD_PRELOAD": path, "PANOSAMIC_ALLOCATOR": "system"}
    for item in args.env:
        name, assignment = item.split(":", 1)
        var, value = assignment.split("=", 1)
        sides[name][var] = value
    results: Dict[str, List[dict]] = {k: [] for k in sides}
    for r in range(args.rounds):
        for name, extra in sides.items():
            env = dict(os.environ)
            env.pop("LD_PRELOAD", None)
            env.pop("PANOSAMIC_ALLOCATOR_REEXEC", None)
            env.update(extra)
            proc = subprocess.run([sys.executable, "-m", "devtools.encoder_variants", "--preset", args.preset,
                                   "--variants", args.variant, "--repeats", str(args.repeats)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name}: exit {proc.returncode}")
            out = json.loads(proc.stdout)
            v = out["variants"][args.variant]
            results[name].append({"wall": v["median_s"], "cpu": v["cpu_s_median"], "sys": v["sys_s_median"],
                                  "first_wall": v["warmup_s"], "first_cpu": v["warmup_cpu_s"],
                                  "first_sys": v["warmup_sys_s"],
                                  "allocator_seen": out["allocator"], "load": out["loadavg_before"][0]})
            print(f"[allocators] round {r + 1} {name}: {v['median_s']:.2f} s wall, {v['sys_s_median']:.2f} s sys",
                  file=sys.stderr, flush=True)
    summary = {}
    for name, runs in results.items():
        summary[name] = {k: round(statistics.median(x[k] for x in runs), 3)
                         for k in ("wall", "cpu", "sys", "first_wall", "first_cpu", "first_sys")}
        summary[name]["walls"] = [x["wall"] for x in runs]
        summary[name]["allocator_seen"] = runs[0]["allocator_seen"]
        summary[name]["env"] = sides[name]
    if "tcmalloc" in summary:
        for name in summary:
            summary[name]["wall_vs_tcmalloc"] = round(summary[name]["wall"] / summary["tcmalloc"]["wall"], 3)
            summary[name]["cpu_vs_tcmalloc"] = round(summary[name]["cpu"] / summary["tcmalloc"]["cpu"], 3)
            summary[name]["first_cpu_vs_tcmalloc"] = round(summary[name]["first_cpu"] / summary["tcmalloc"]["first_cpu"], 3)
    print(json.dumps({"preset": args.preset, "rounds": args.rounds, "loadavg_end": os.getloadavg(),
                      "allocators": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
