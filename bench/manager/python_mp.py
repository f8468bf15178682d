"""manager with CPython's multiprocessing.Manager (SyncManager), fork start method.

queue_put_get: put n ints then get them on Manager().Queue(), one process; queue_1to1: a child
puts n ints, the parent gets them; queue_roundtrip: put(i) then get() in one process, p50/p99;
dict_set / dict_get / value_get / lock_acquire_release: one proxy call (the lock: acquire and
release), p50/p99; start_shutdown: Manager() + shutdown(), median, best and CPU time (this process
and the reaped server) in ms. split: the proxy calls only, this process on CPU 0, the server on 1.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import multiprocessing as mp  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import bench_common as bc  # noqa: E402


def producer(q, n):
    bc.die_with_parent()
    for i in range(n):
        q.put(i)


def cpu_ms():
    """CPU time (user + system) of this process and its reaped children, in ms."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += (ru.ru_utime + ru.ru_stime) * 1e3
    return total


def latency(opt, case, fn, samples, warmup, check):
    rtt = []
    clock = time.perf_counter_ns
    for i in range(warmup + samples):
        t0 = clock()
        fn(i)
        t1 = clock()
        if i >= warmup:
            rtt.append((t1 - t0) / 1000.0)
    for metric, p in (("p50_us", 50), ("p99_us", 99)):
        bc.emit(opt, case, metric, bc.percentile(rtt, p), "us", False, True, check)


def queue_cases(opt, ctx, m):
    """The manager Queue's cases; returns whether every check passed."""
    ok = True
    # one process: put n, then get n
    n = bc.scaled(opt.mode, 5000)
    q = m.Queue()
    t0 = time.perf_counter_ns()
    for i in range(n):
        q.put(i)
    got = bc.Checksum()
    for i in range(n):
        got.add(q.get())
    dt = (time.perf_counter_ns() - t0) / 1e9
    good = got == bc.Checksum.of_range(0, n)
    ok = ok and good
    bc.emit(opt, "queue_put_get", "items_per_s", 2 * n / dt if good else float("nan"),
            "items/s", True, good, str(got))

    # producer -> consumer
    n = bc.scaled(opt.mode, 5000)
    q = m.Queue()
    p = ctx.Process(target=producer, args=(q, n), daemon=True)
    t0 = time.perf_counter_ns()
    p.start()
    got = bc.Checksum()
    for i in range(n):
        got.add(q.get(timeout=30))
    dt = (time.perf_counter_ns() - t0) / 1e9
    p.join(30)
    good = got == bc.Checksum.of_range(0, n) and p.exitcode == 0
    ok = ok and good
    bc.emit(opt, "queue_1to1", "items_per_s", n / dt if good else float("nan"), "items/s",
            True, good, str(got))

    samples, warmup = bc.scaled(opt.mode, 2000), bc.scaled(opt.mode, 200)

    def roundtrip(i):
        q.put(i)
        if q.get() != i:
            raise RuntimeError("wrong item")

    latency(opt, "queue_roundtrip", roundtrip, samples, warmup, f"count={samples}")
    return ok


def call_cases(opt, m):
    samples, warmup = bc.scaled(opt.mode, 2000), bc.scaled(opt.mode, 200)
    d = m.dict()
    d["k"] = 0

    def dict_set(i):
        d["k"] = i

    latency(opt, "dict_set", dict_set, samples, warmup, f"count={samples}")
    latency(opt, "dict_get", lambda i: d["k"], samples, warmup, f"count={samples}")
    v = m.Value("i", 7)
    latency(opt, "value_get", lambda i: v.value, samples, warmup, f"count={samples}")
    lock = m.Lock()

    def lock_pair(i):
        lock.acquire()
        lock.release()

    latency(opt, "lock_acquire_release", lock_pair, samples, warmup, f"count={samples}")


def main():
    opt = bc.parse_options("manager", "python_mp")
    ctx = mp.get_context("fork")
    split = opt.placement == "split"
    ok = True
    if split:
        os.sched_setaffinity(0, {0})
    with ctx.Manager() as m:
        if split:
            # every thread the server has; those it makes at each connection inherit the CPU
            for tid in os.listdir(f"/proc/{m._process.pid}/task"):
                os.sched_setaffinity(int(tid), {1})
            for case in ("queue_put_get", "queue_1to1"):
                bc.emit_na(opt, case, "items_per_s", "items/s", True, "measured unpinned")
            for metric in ("p50_us", "p99_us"):
                bc.emit_na(opt, "queue_roundtrip", metric, "us", False, "measured unpinned")
        else:
            ok = queue_cases(opt, ctx, m)
        call_cases(opt, m)

    if split:
        for metric in ("ms", "min_ms", "cpu_ms"):
            bc.emit_na(opt, "start_shutdown", metric, "ms", False, "measured unpinned")
        sys.exit(0 if ok else 1)
    runs = bc.pick(opt.mode, 2, 20, 60)
    times = []
    cpu0 = 0.0
    for r in range(runs + 1):
        if r == 1:
            cpu0 = cpu_ms()
        t0 = time.perf_counter_ns()
        m = ctx.Manager()
        m.shutdown()
        if r > 0:  # the first is a warm-up
            times.append((time.perf_counter_ns() - t0) / 1e6)
    cpu = (cpu_ms() - cpu0) / runs
    for metric, value in (("ms", statistics.median(times)), ("min_ms", min(times)),
                          ("cpu_ms", cpu)):
        bc.emit(opt, "start_shutdown", metric, value, "ms", False, True, f"count={runs}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
