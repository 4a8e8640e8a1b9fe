#!/usr/bin/env python3
"""reaper.py COMMAND [ARG …] — run COMMAND as a child subreaper's child (Linux).

Chromium double-forks helper processes; their parent dies and they are re-parented to the nearest
subreaper, normally PID 1. In containers whose PID 1 does not reap, they stay zombies forever.
This wrapper marks itself PR_SET_CHILD_SUBREAPER, so every orphan of COMMAND is re-parented to it
and reaped; it forwards SIGTERM/SIGINT/SIGHUP to COMMAND and exits with COMMAND's status once
no descendant is left.
"""
import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
child = os.fork()
if child == 0:
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, lambda sig, _f: os.kill(child, sig))
rc = 1
while True:
    try:
        pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    except InterruptedError:
        continue
    if pid == child:
        rc = os.waitstatus_to_exitcode(status)
sys.exit(rc if rc >= 0 else 128 - rc)
