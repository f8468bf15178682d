"""Shared helpers of the Python competitor scripts (standard library only).

The Python side of bench/common/bench_common.hpp; bench/README.md is the protocol. A competitor
script parses --mode (parse_options), pins its processes by role (pin), checks what it received
(Checksum, stamp/read_stamp for byte items) and prints one JSON object per figure (emit, emit_na).

Scripts import it with:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
which also works in spawned and forkserver children, which re-run the script's top level.
"""

import argparse
import ctypes
import json
import math
import os
import signal
import struct
import sys
import time

MASK = (1 << 64) - 1
CHECKSUM_MUL = 0x9E3779B97F4A7C15
MID_XOR = 0xA5A5A5A5A5A5A5A5
STOP = MASK  # ends a producer's stream in the many-to-many case

SMOKE, QUICK, FULL = "smoke", "quick", "full"
PLACEMENTS = ("split", "same", "unpinned")
PRODUCER, CONSUMER = "producer", "consumer"


class Options:
    def __init__(self, mode, placement, scenario, competitor):
        self.mode = mode
        self.placement = placement
        self.scenario = scenario
        self.competitor = competitor


def parse_options(scenario, competitor, uses_placement=True):
    """--mode smoke|quick|full (default quick) and BENCH_PLACEMENT (default unpinned).

    A workload without placement (a pool uses every CPU) passes uses_placement=False and always
    reports "unpinned". Bad arguments exit with status 2.
    """
    ap = argparse.ArgumentParser(description=f"{scenario} benchmark, competitor {competitor}")
    ap.add_argument("--mode", choices=(SMOKE, QUICK, FULL), default=QUICK)
    args = ap.parse_args()
    placement = os.environ.get("BENCH_PLACEMENT", "") or "unpinned"
    if placement not in PLACEMENTS:
        print(f"bench: unknown BENCH_PLACEMENT {placement!r} (split|same|unpinned)", file=sys.stderr)
        sys.exit(2)
    if not uses_placement:
        placement = "unpinned"
    return Options(args.mode, placement, scenario, competitor)


def pick(mode, smoke, quick, full):
    return {SMOKE: smoke, QUICK: quick, FULL: full}[mode]


def scaled(mode, quick):
    """smoke = quick // 1000 (at least min(quick, 16)), quick, full = 4 * quick."""
    return pick(mode, max(min(quick, 16), quick // 1000), quick, 4 * quick)


def pin(placement, role):
    """Pins the calling process: split puts producers on CPU 0 and consumers on CPU 1; same puts
    everything on CPU 0. Call it first thing in a process, before it starts threads (the feeder
    thread of a multiprocessing.Queue starts at the first put)."""
    if placement == "unpinned":
        return
    cpu = 1 if (placement == "split" and role == CONSUMER) else 0
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as e:
        print(f"bench: cannot pin to CPU {cpu}: {e}", file=sys.stderr)
        sys.exit(2)


def die_with_parent():
    """The calling process gets SIGKILL when its parent dies (Linux), so that a benchmark killed by
    the runner's timeout leaves no orphans."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def now_ns():
    """CLOCK_MONOTONIC: one clock for the whole machine, comparable across processes."""
    return time.monotonic_ns()


def percentile(values, p):
    """Nearest-rank percentile, p in [0, 100]; NaN when there are no values."""
    if not values:
        return math.nan
    v = sorted(values)
    rank = math.ceil(p / 100.0 * len(v))
    return v[min(max(rank, 1), len(v)) - 1]


class Checksum:
    """count, and checksum = (sum(v) + CHECKSUM_MUL * sum(v*v)) mod 2**64, as in C++."""

    def __init__(self, count=0, s1=0, s2=0):
        self.count, self.s1, self.s2 = count, s1, s2

    def add(self, v):
        self.count += 1
        self.s1 += v
        self.s2 += v * v

    def add_all(self, values):
        values = list(values)
        self.count += len(values)
        self.s1 += sum(values)
        self.s2 += sum(v * v for v in values)
        return self

    def merge(self, other):
        self.count += other.count
        self.s1 += other.s1
        self.s2 += other.s2
        return self

    def value(self):
        return (self.s1 + CHECKSUM_MUL * self.s2) & MASK

    def __eq__(self, other):
        return self.count == other.count and self.value() == other.value()

    def __str__(self):
        return f"count={self.count} checksum={self.value():016x}"

    def state(self):
        return (self.count, self.s1, self.s2)

    @staticmethod
    def of_range(lo, hi):
        """The checksum of lo, lo+1, ..., hi-1."""

        def s1(n):
            return n * (n - 1) // 2

        def s2(n):
            return (n - 1) * n * (2 * n - 1) // 6 if n > 0 else 0

        return Checksum(hi - lo, s1(hi) - s1(lo), s2(hi) - s2(lo))


def make_item_template(size):
    """A bytearray of `size` bytes with the same filler as the C++ producers."""
    return bytearray((i * 31 + 7) & 0xFF for i in range(size))


def stamp(buf, seq):
    """Writes seq's stamps into the bytearray buf (see bench_common.hpp: seq at 0,
    seq ^ MID_XOR in the middle word, ~seq in the last 8 bytes; only seq below 24 bytes)."""
    n = len(buf)
    struct.pack_into("<Q", buf, 0, seq)
    if n >= 24:
        struct.pack_into("<Q", buf, (n // 2) & ~7, seq ^ MID_XOR)
        struct.pack_into("<Q", buf, n - 8, ~seq & MASK)


def read_stamp(item):
    """The item's sequence number, or None when its stamps disagree."""
    n = len(item)
    if n < 8:
        return None
    (first,) = struct.unpack_from("<Q", item, 0)
    if n >= 24:
        (mid,) = struct.unpack_from("<Q", item, (n // 2) & ~7)
        (last,) = struct.unpack_from("<Q", item, n - 8)
        if mid != first ^ MID_XOR or last != ~first & MASK:
            return None
    return first


def _print(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def emit(opt, case, metric, value, unit, higher_is_better=True, ok=True, check="", note=""):
    """Prints one figure as a JSON line (a non-finite value becomes null with ok=false)."""
    finite = value is not None and math.isfinite(value)
    obj = {
        "scenario": opt.scenario,
        "case": case,
        "competitor": opt.competitor,
        "placement": opt.placement,
        "metric": metric,
        "value": value if finite else None,
        "unit": unit,
        "higher_is_better": higher_is_better,
        "ok": bool(ok and finite),
        "check": check,
    }
    if note:
        obj["note"] = note
    _print(obj)


def emit_na(opt, case, metric, unit, higher_is_better=True, note=""):
    """Says that a case does not apply: value null, ok true, check "n/a", the reason in note."""
    obj = {
        "scenario": opt.scenario,
        "case": case,
        "competitor": opt.competitor,
        "placement": opt.placement,
        "metric": metric,
        "value": None,
        "unit": unit,
        "higher_is_better": higher_is_better,
        "ok": True,
        "check": "n/a",
    }
    if note:
        obj["note"] = note
    _print(obj)


def cpu_work(iters, seed):
    """cpu_scaling's task: a chain of 64-bit LCG steps (bench_common.hpp's cpu_work)."""
    x = seed
    for _ in range(iters):
        x = (x * 6364136223846793005 + 1442695040888963407) & MASK
    return x


def calibrate_cpu_work(seconds):
    """How many cpu_work iterations take `seconds` of CPU here (best of a few trials)."""
    probe = 20000
    best = math.inf
    for t in range(5):
        t0 = time.perf_counter()
        cpu_work(probe, t)
        best = min(best, time.perf_counter() - t0)
    return max(1, int(probe * seconds / best))
