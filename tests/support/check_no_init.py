#!/usr/bin/python3
"""Runs tests/programs/no_init and checks that it fails in the parent with an error naming
multiproc::init, within seconds, without a storm of processes (at most a handful ever exist)."""
import os, subprocess, sys, time

cmd = sys.argv[1:]
start = time.monotonic()
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        stdin=subprocess.DEVNULL, start_new_session=True)
peak = 0
while proc.poll() is None and time.monotonic() - start < 60:
    # Count the processes of its session (the program and anything it started).
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getsid(int(pid)) == proc.pid:
                    n += 1
            except OSError:
                pass
    peak = max(peak, n)
    time.sleep(0.02)
if proc.poll() is None:
    os.killpg(proc.pid, 9)
    print("FAIL: still running after 60 s")
    sys.exit(1)
out, err = proc.communicate()
elapsed = time.monotonic() - start
try:
    os.killpg(proc.pid, 9)  # the tracker or a fork server, if any outlived it
except OSError:
    pass
ok = proc.returncode == 2 and "multiproc::init(argc, argv)" in err and elapsed < 30 and peak <= 8
print(f"exit {proc.returncode}, {elapsed:.2f} s, at most {peak} processes\nstderr: {err.strip()}")
sys.exit(0 if ok else 1)
