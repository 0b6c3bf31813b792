"""components.base helpers that every family uses: thread control."""

from __future__ import annotations

import threading

import torch

from components.base import set_threads, single_intra_op_thread


def test_single_intra_op_thread_restores_after_the_last_concurrent_block() -> None:
    n = torch.get_num_threads()
    set_threads(2)
    try:
        inside = threading.Barrier(2)
        first_left = threading.Event()
        seen: dict[str, int] = {}

        def first() -> None:
            with single_intra_op_thread():
                inside.wait()
            first_left.set()

        def second() -> None:
            with single_intra_op_thread():
                inside.wait()
                first_left.wait(5)
                # the first block has exited; this one still runs single-threaded
                seen["second"] = torch.get_num_threads()

        ts = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        assert seen == {"second": 1}
        assert torch.get_num_threads() == 2
        with single_intra_op_thread(enabled=False):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n)
