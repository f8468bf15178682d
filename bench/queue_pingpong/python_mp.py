"""queue_pingpong with two multiprocessing.Queue (one each way), default start method (fork).

The parent (producer role) puts i and waits for i + 1 from the child (consumer role); warm-up
round trips first, then timed ones; p50/p99 in microseconds; every reply is checked.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import multiprocessing as mp  # noqa: E402
import time  # noqa: E402

import bench_common as bc  # noqa: E402


def pong(to_child, to_parent, placement):
    bc.die_with_parent()
    bc.pin(placement, bc.CONSUMER)
    get, put = to_child.get, to_parent.put
    while True:
        v = get()
        if v == bc.STOP:
            break
        put(v + 1)


def main():
    opt = bc.parse_options("queue_pingpong", "python_mp")
    bc.pin(opt.placement, bc.PRODUCER)  # before the queues' feeder threads exist
    warmup, samples = bc.scaled(opt.mode, 300), bc.scaled(opt.mode, 3000)
    to_child, to_parent = mp.Queue(), mp.Queue()
    child = mp.Process(target=pong, args=(to_child, to_parent, opt.placement), daemon=True)
    child.start()
    rtt = []
    replies = []
    error = ""
    put, get, clock = to_child.put, to_parent.get, time.perf_counter_ns
    try:
        for i in range(warmup + samples):
            t0 = clock()
            put(i)
            r = get(timeout=30)
            t1 = clock()
            if i >= warmup:
                rtt.append((t1 - t0) / 1000.0)
            if r != i + 1 and not error:
                error = f"reply {r} to {i}"
            replies.append(r)
        put(bc.STOP)
        child.join(timeout=30)
    except Exception as e:  # queue.Empty when the child died
        error = error or f"{type(e).__name__}: {e}"
    if child.is_alive():
        child.kill()
        child.join()
    if child.exitcode != 0 and not error:
        error = f"child exited with status {child.exitcode}"
    got = bc.Checksum().add_all(replies)
    want = bc.Checksum.of_range(1, warmup + samples + 1)
    ok = not error and got == want
    note = error if error else ("" if ok else f"expected {want}")
    for metric, p in (("p50_us", 50), ("p99_us", 99)):
        value = bc.percentile(rtt, p) if ok else float("nan")
        bc.emit(opt, "int64", metric, value, "us", False, ok, str(got), note)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
