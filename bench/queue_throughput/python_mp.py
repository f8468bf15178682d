"""queue_throughput with Python's multiprocessing.Queue, default start method (fork on Linux).

Same cases, items and checks as the C++ competitors (see bench/README.md): integers are put as
Python ints, byte items as `bytes` carrying the same stamps. The integer queues are unbounded
(Queue(), as most programs use it); byte queues hold at most ~4 MiB (maxsize = 4 MiB / item, at least
4), the depth every competitor's byte queue has. multiprocessing.Queue has no put_many/get_many: int64_1to1_batched is n/a.
"""

import os
import queue
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import multiprocessing as mp  # noqa: E402

import bench_common as bc  # noqa: E402

# name, item bytes, producers, consumers, batched, items in quick mode
CASES = [
    ("int64_1to1", 8, 1, 1, False, 100_000),
    ("int64_1to1_batched", 8, 1, 1, True, 0),
    ("bytes1k_1to1", 1024, 1, 1, False, 60_000),
    ("bytes64k_1to1", 65536, 1, 1, False, 3_000),
    ("bytes1m_1to1", 1 << 20, 1, 1, False, 100),
    ("int64_2to2", 8, 2, 2, False, 80_000),
]


def producer(q, barrier, results, index, placement, size, lo, hi, many):
    bc.die_with_parent()
    bc.pin(placement, bc.PRODUCER)
    barrier.wait()
    t0 = bc.now_ns()
    put = q.put
    if size == 8:
        for i in range(lo, hi):
            put(i)
    else:
        item = bc.make_item_template(size)
        for i in range(lo, hi):
            bc.stamp(item, i)
            put(bytes(item))
    if many:
        put(bc.STOP)
    results.put((index, t0, 0, (0, 0, 0), ""))


def consumer(q, barrier, results, index, placement, size, n, many):
    bc.die_with_parent()
    bc.pin(placement, bc.CONSUMER)
    barrier.wait()
    get = q.get
    error = ""
    values = []
    if many:
        while True:
            v = get()
            if v == bc.STOP:
                break
            values.append(v)
    elif size == 8:
        for i in range(n):
            v = get()
            if v != i and not error:
                error = f"item {i} arrived as {v}"
            values.append(v)
    else:
        for i in range(n):
            item = get()
            seq = bc.read_stamp(item)
            if (len(item) != size or seq != i) and not error:
                error = f"item {i}: size {len(item)}, stamps bad or out of order"
            values.append(seq if seq is not None else 0)
    t1 = bc.now_ns()
    results.put((index, 0, t1, bc.Checksum().add_all(values).state(), error))


def run_case(opt, name, size, producers, consumers, n):
    maxsize = 0 if size == 8 else max(4, (4 << 20) // size)
    q = mp.Queue(maxsize)
    members = producers + consumers
    barrier = mp.Barrier(members + 1)
    results = mp.Queue()
    many = consumers > 1
    procs = []
    for p in range(producers):
        lo, hi = n * p // producers, n * (p + 1) // producers
        args = (q, barrier, results, p, opt.placement, size, lo, hi, many)
        procs.append(mp.Process(target=producer, args=args, daemon=True))
    for c in range(consumers):
        args = (q, barrier, results, producers + c, opt.placement, size, n, many)
        procs.append(mp.Process(target=consumer, args=args, daemon=True))
    for p in procs:
        p.start()
    failed = []
    got = {}
    try:
        barrier.wait(timeout=30)
        while len(got) < members:
            try:
                r = results.get(timeout=0.5)
                got[r[0]] = r
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    failed.append(f"child exited with status {dead[0].exitcode}")
                    break
    except Exception as e:  # a broken barrier: a child died before starting
        failed.append(f"{type(e).__name__}: {e}")
    for p in procs:
        p.join(timeout=30 if not failed else 0.1)
        if p.is_alive():
            p.kill()
            p.join()
        if p.exitcode != 0 and not failed:
            failed.append(f"child exited with status {p.exitcode}")
    total = bc.Checksum()
    start, end = None, None
    for index, t0, t1, state, error in got.values():
        if error:
            failed.append(error)
        if index < producers:
            start = t0 if start is None else min(start, t0)
        else:
            end = t1 if end is None else max(end, t1)
            total.merge(bc.Checksum(*state))
    want = bc.Checksum.of_range(0, n)
    ok = not failed and total == want
    note = "; ".join(failed) if failed else ("" if ok else f"expected {want}")
    items = n / ((end - start) * 1e-9) if ok and end and start and end > start else float("nan")
    bc.emit(opt, name, "items_per_s", items, "items/s", True, ok, str(total), note)
    if size != 8:
        bc.emit(opt, name, "bytes_per_s", items * size, "B/s", True, ok, str(total), note)
    return ok


def main():
    opt = bc.parse_options("queue_throughput", "python_mp")
    ok = True
    for name, size, producers, consumers, batched, quick in CASES:
        if batched:
            bc.emit_na(opt, name, "items_per_s", "items/s", True,
                       "multiprocessing.Queue has no put_many/get_many")
            continue
        ok = run_case(opt, name, size, producers, consumers, bc.scaled(opt.mode, quick)) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
