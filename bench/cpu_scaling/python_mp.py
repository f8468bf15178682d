"""cpu_scaling with Python: 40 CPU-bound tasks of ~20 ms each on multiprocessing.Pool(2) versus
the same tasks run serially in the parent. speedup = serial time / pool time (ideal: 2 on two
idle CPUs). The task is bench_common.cpu_work (an LCG chain), calibrated here to 20 ms; the pool
is started and warmed up before timing, map uses chunksize=1; results are compared with the
serial ones.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import multiprocessing as mp  # noqa: E402
import time  # noqa: E402

import bench_common as bc  # noqa: E402


def task(args):
    iters, seed = args
    return bc.cpu_work(iters, seed)


def main():
    opt = bc.parse_options("cpu_scaling", "python_mp", uses_placement=False)
    tasks = bc.pick(opt.mode, 4, 40, 40)
    seconds = bc.pick(opt.mode, 0.002, 0.020, 0.020)
    iters = bc.calibrate_cpu_work(seconds)
    work = [(iters, seed) for seed in range(tasks)]
    t0 = time.perf_counter()
    expected = [task(w) for w in work]
    serial = time.perf_counter() - t0
    with mp.Pool(2) as pool:
        pool.map(task, [(1, 0), (1, 1)], chunksize=1)  # both workers up
        t0 = time.perf_counter()
        result = pool.map(task, work, chunksize=1)
        parallel = time.perf_counter() - t0
    ok = result == expected
    got = bc.Checksum().add_all(result)
    case = f"cpu{round(seconds * 1000)}ms_x{tasks}"
    note = (f"serial {serial * 1000:.0f} ms, Pool(2) {parallel * 1000:.0f} ms, "
            f"{iters} iterations per task")
    if not ok:
        note = "pool results differ from the serial ones; " + note
    bc.emit(opt, case, "speedup", serial / parallel if ok else float("nan"), "x", True, ok,
            str(got), note)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
