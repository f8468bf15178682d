#!/bin/sh
# Runs a test program under its own shared-memory prefix and then checks that nothing it, its
# children, or the children it SIGKILLed created is left in /dev/shm, nor any of its processes,
# once the program has exited (the resource tracker removes what crashed processes left behind).
set -u
prefix="leak$$x"
log=$(mktemp)
MULTIPROC_SHM_PREFIX=$prefix "$@" >"$log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
  echo "leak_check: the program failed (exit $rc):"; tail -40 "$log"; rm -f "$log"; exit 1
fi
rm -f "$log"
i=0
while [ $i -lt 100 ]; do
  left=$(ls /dev/shm 2>/dev/null | grep "^$prefix" | head -5)
  [ -z "$left" ] && { echo "leak_check: /dev/shm clean"; exit 0; }
  sleep 0.1
  i=$((i + 1))
done
echo "leak_check: left in /dev/shm after 10 s: $left"
ls /dev/shm | grep "^$prefix" | while read -r f; do rm -f "/dev/shm/$f"; done
exit 1
