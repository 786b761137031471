"""shared.shutdown: SIGINT/SIGTERM stop a service without a lock in the signal handler; SIGUSR1 dumps stacks."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from shared.shutdown import STACK_DUMP_SIGNAL, ShutdownSignals

ROOT = Path(__file__).resolve().parents[1]

#: A service whose main thread enters ``stopping.wait`` again and again: the worst case for a handler that takes
#: the event's lock (a handler that called ``Event.set()`` left 57 of 100 such processes deaf to SIGTERM).
BUSY_SERVICE = """
import threading
from shared.shutdown import ShutdownSignals
stopping = threading.Event()
with ShutdownSignals(stopping) as signals:
    print("ready", flush=True)
    while not stopping.wait(0):
        pass
print("stopped by", signals.received.name, flush=True)
"""


def spawn(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stopped_by(proc: subprocess.Popen[str]) -> str:
    """The rest of ``proc``'s output once it exits with code 0 within 10 s (else the test fails, and it is killed)."""
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the process ignored SIGTERM") from None
    assert proc.returncode == 0, err
    return out


def test_a_stop_signal_sets_the_event_and_the_previous_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stopping = threading.Event()
    with ShutdownSignals(stopping) as signals:
        assert signal.getsignal(signal.SIGTERM) != before
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopping.wait(5)
    assert signals.received is signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_stops_a_main_thread_that_keeps_entering_the_wait() -> None:
    rng = random.Random(0)
    for _ in range(20):
        proc = spawn(BUSY_SERVICE)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.005, 0.03))
        proc.terminate()
        assert stopped_by(proc) == "stopped by SIGTERM\n"


#: A service whose main thread blocks in ``stopping.wait()`` while SIGTERM goes to another thread (the kernel does
#: that when the main thread cannot take it): no Python handler runs then, so the stop must not rely on one.
SIGNAL_TO_A_WORKER = """
import signal, threading, time
from shared.shutdown import ShutdownSignals
stopping = threading.Event()

def worker():
    print("ready", flush=True)
    time.sleep(0.3)
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
    stopping.wait()

with ShutdownSignals(stopping) as signals:
    threading.Thread(target=worker, daemon=True).start()
    stopping.wait()
print("stopped by", signals.received.name, flush=True)
"""


def test_sigterm_delivered_to_another_thread_stops_a_main_thread_blocked_in_wait() -> None:
    assert stopped_by(spawn(SIGNAL_TO_A_WORKER)) == "ready\nstopped by SIGTERM\n"


def test_sigusr1_dumps_every_thread_and_the_service_runs_on() -> None:
    proc = spawn(BUSY_SERVICE.replace("stopping.wait(0)", "stopping.wait(0.05)"))
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(STACK_DUMP_SIGNAL)
    time.sleep(0.5)
    assert proc.poll() is None  # still running
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and out == "stopped by SIGINT\n"
    assert "Current thread" in err and 'File "<string>"' in err  # the main thread's stack
    assert "shared/shutdown.py" in err and "_watch" in err  # and the signals thread's
