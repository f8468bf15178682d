"""pool_startup with Python: multiprocessing.get_context(method).Pool(n); close(); join().

For each start method (fork, spawn, forkserver) and n in (2, 10): one untimed warm-up (which also
starts the forkserver's server, as in a long-running program; none in smoke mode), then timed
runs; the median in milliseconds. The check: every worker of every run exited with status 0 (each one started, took
the stop sentinel and left).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import multiprocessing as mp  # noqa: E402
import time  # noqa: E402

import bench_common as bc  # noqa: E402


def start_close_join(ctx, n):
    t0 = time.perf_counter()
    pool = ctx.Pool(n)
    pool.close()
    pool.join()
    dt = time.perf_counter() - t0
    workers = getattr(pool, "_pool", [])  # Pool's worker Process objects (a private attribute)
    return dt, sum(1 for w in workers if w.exitcode == 0)


def main():
    opt = bc.parse_options("pool_startup", "python_mp", uses_placement=False)
    runs = bc.pick(opt.mode, 1, 3, 5)
    ok_all = True
    for method in ("fork", "spawn", "forkserver"):
        ctx = mp.get_context(method)
        for n in (2, 10):
            if opt.mode != bc.SMOKE:
                start_close_join(ctx, n)  # warm-up
            times, clean = [], 0
            for _ in range(runs):
                dt, exited_ok = start_close_join(ctx, n)
                times.append(dt * 1000.0)
                clean += exited_ok
            ok = clean == n * runs
            times.sort()
            value = times[len(times) // 2] if ok else float("nan")
            check = f"count={n * runs} clean_exits={clean}"
            note = "" if ok else f"{n * runs - clean} of {n * runs} workers did not exit cleanly"
            bc.emit(opt, f"{method}_n{n}", "ms", value, "ms", False, ok, check, note)
            ok_all = ok_all and ok
    sys.exit(0 if ok_all else 1)


if __name__ == "__main__":
    main()
