"""Print the sm_90 compile of every Triton kernel specialization as a table (no GPU needed).

Usage: ``python tests/ptx_compile.py [fp32|fp16|bf16 ...] [--jobs N]`` prints one line per
specialization: ``<kernel>[<dot key>]<switches> <bytes of PTX> <registers> <stack bytes>
<seconds>``, then the count and wall time. Stack > 0 means register spills. The enumeration and
the compile live in ``fusedrnn.kernels.triton.aot_compile``; ``test_ptx_compile.py`` asserts on
the same rows.
"""

import argparse
import time

from fusedrnn.kernels.triton.aot_compile import DTYPES, compile_all, specializations


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # no argparse choices: Python 3.11 checks an empty "*" list against them and refuses it
    parser.add_argument("dtypes", nargs="*", metavar="DTYPE", help=f"of {DTYPES}; default all")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (all cores)")
    args = parser.parse_args()
    if set(args.dtypes) - set(DTYPES):
        parser.error(f"dtypes must be among {DTYPES}, not {args.dtypes}")
    start = time.perf_counter()
    specs = specializations(args.dtypes or DTYPES)
    rows = compile_all(specs, args.jobs)
    for row in rows:
        if "error" in row:
            print(row["name"], "ERROR", row["error"], flush=True)
        else:
            print(row["name"], row["ptx_bytes"], row["registers"], row["stack_bytes"],
                  f"{row['seconds']:.2f}", flush=True)
    print(f"# {len(rows)} specializations, {time.perf_counter() - start:.1f} s wall")
    raise SystemExit(1 if any("error" in row for row in rows) else 0)


if __name__ == "__main__":
    main()
