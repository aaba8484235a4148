"""Running a conversion's shard tasks: in this process, or in worker processes that die with it.

Workers are spawned, not forked (the parent may hold TensorFlow's threads:
tests, notebooks), and end as soon as their parent does: a conversion killed
with kill -9 leaves no worker converting on, and since shards reach their
final names only by an atomic rename at the end, nothing half-written.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time

from cgan_ct.data.shard_writer import ShardTask, write_shard

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: a worker whose parent is gone (kill -9) ends at once instead of converting on.

    Linux delivers SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG); elsewhere, and for a
    parent that died before the call, a watchdog thread checks the parent's pid every second.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="cgan-ct-parent-watch", daemon=True).start()


def run_tasks(tasks: list[ShardTask], workers: int, progress) -> list[dict]:
    """Writes every task's shard; returns the receipts. ``progress(receipt, done, total)`` after each."""
    if workers <= 1 or len(tasks) <= 1:
        receipts = []
        for task in tasks:
            receipts.append(write_shard(task))
            if progress:
                progress(receipts[-1], len(receipts), len(tasks))
        return receipts
    # spawn, not fork: the parent may hold TensorFlow's threads (tests, notebooks).
    context = multiprocessing.get_context("spawn")
    receipts = []
    pool = concurrent.futures.ProcessPoolExecutor(
        min(workers, len(tasks)), mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),)
    )
    with pool:
        for future in concurrent.futures.as_completed([pool.submit(write_shard, t) for t in tasks]):
            receipts.append(future.result())
            if progress:
                progress(receipts[-1], len(receipts), len(tasks))
    return receipts
