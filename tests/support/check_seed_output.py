#!/usr/bin/python3
"""Runs one of the seed's example programs and checks what a user would: it exits 0, prints its
start method, then ten lines "> got X" with X in [0, 5); the ten sleeps of up to 5 s ran in
parallel (well under the 25 s a serial run would take), so the values arrive in increasing order
(within a small tolerance for scheduling)."""
import subprocess, sys, time

start = time.monotonic()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=100, stdin=subprocess.DEVNULL)
elapsed = time.monotonic() - start
out = proc.stdout.splitlines()
def fail(msg):
    print(f"FAIL: {msg}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    sys.exit(1)
if proc.returncode != 0:
    fail(f"exit code {proc.returncode}")
if not out or not out[0].startswith("start method: "):
    fail("no start method line")
got = [l for l in out[1:] if l.startswith("> got ")]
if len(got) != 10 or len(out) != 11:
    fail(f"expected ten '> got' lines, saw {len(got)}")
values = [float(l[len("> got "):]) for l in got]
if not all(0 <= v < 5 for v in values):
    fail("a value outside [0, 5)")
if any(b < a - 0.25 for a, b in zip(values, values[1:])):
    fail(f"values not in the order their sleeps ended: {values}")
if elapsed > 20:
    fail(f"took {elapsed:.1f} s: the tasks did not run in parallel")
print(f"ok: {out[0]}, ten values, {elapsed:.1f} s")
