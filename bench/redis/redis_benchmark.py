"""redis scenario, redis-benchmark: the engine's ceiling for a queue. LPUSH then RPOP, each
measured by redis-benchmark; one item is one push and one pop, so items/s = 1 / (1/push_rate +
1/pop_rate). Pool cases do not apply.

- queue_1by1 (one producer and one consumer, each waiting for every reply): 2 clients,
  unpipelined: two requests in flight at any time, as with the producer and the consumer. Its
  push run and its pop run each do two commands per round trip, so 1/(1/push + 1/pop) is one
  item (a push and a pop) per round trip: what the pair does at best, pushing and popping at
  once. (With 1 client it would be half that: the push and the pop one after the other.)
- queue_1by1_50clients (25 producers and 25 consumers): its default 50 clients, unpipelined.
- queue_batched (put_many/get_many of 64): 50 clients at pipeline 64."""
import csv
import io
import os
import subprocess
import sys
from urllib.parse import urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
sys.path.insert(0, HERE)
import bench_common as bc  # noqa: E402
import _redis_server  # noqa: E402


def rates(url, n, pipeline, clients):
    u = urlparse(url)
    cmd = ["redis-benchmark", "-h", u.hostname, "-p", str(u.port), "-t", "lpush,rpop", "-n",
           str(n), "-P", str(pipeline), "-c", str(clients), "--csv"]
    if u.password:
        cmd += ["-a", u.password]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    got = {}
    for row in csv.reader(io.StringIO(out)):
        if len(row) >= 2 and row[0] in ("LPUSH", "RPOP"):
            got[row[0]] = float(row[1])
    return got


def main():
    opt = bc.parse_options("redis", "redis_benchmark", uses_placement=False)
    for case, metric, unit, hib in [("apply_async_1by1", "tasks_per_s", "tasks/s", True),
                                    ("apply_async_get", "p50_us", "us", False),
                                    ("apply_async_get", "p99_us", "us", False),
                                    ("map_auto", "tasks_per_s", "tasks/s", True)]:
        bc.emit_na(opt, case, metric, unit, hib, "redis-benchmark runs no tasks")
    url, server = _redis_server.start()
    ok_all = True
    try:
        for case, clients, pipeline, n in (
                ("queue_1by1", 2, 1, bc.pick(opt.mode, 2000, 100000, 400000)),
                ("queue_1by1_50clients", 50, 1, bc.pick(opt.mode, 2000, 200000, 800000)),
                ("queue_batched", 50, 64, bc.pick(opt.mode, 20000, 4000000, 16000000))):
            r = rates(url, n, pipeline, clients)
            ok = "LPUSH" in r and "RPOP" in r and r["LPUSH"] > 0 and r["RPOP"] > 0
            ok_all &= ok
            value = 1.0 / (1.0 / r["LPUSH"] + 1.0 / r["RPOP"]) if ok else float("nan")
            note = "LPUSH %.0f/s, RPOP %.0f/s, pipeline %d, %d clients" % (
                r.get("LPUSH", 0), r.get("RPOP", 0), pipeline, clients)
            bc.emit(opt, case, "items_per_s", value, "items/s", True, ok,
                    "count=%d checksum=n/a" % n, note)
    finally:
        _redis_server.stop(server)
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
