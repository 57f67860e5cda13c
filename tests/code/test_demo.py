"""The demo's end waits for its controller's step: a retrain cut short leaves a half-written
run behind."""

from __future__ import annotations

import threading
import time

from loopml.demo import _finish_step


def test_the_end_of_a_demo_waits_for_a_long_controller_step() -> None:
    done = threading.Event()

    def long_step() -> None:  # a retrain still running when the stream ends
        time.sleep(7)
        done.set()

    thread = threading.Thread(target=long_step, daemon=True)
    thread.start()
    said: list[str] = []
    _finish_step(thread, said.append)
    assert done.is_set() and not thread.is_alive()
    assert said == ["waiting for the controller to finish its step (a retrain can take minutes)"]


def test_a_quick_step_ends_without_a_message() -> None:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    said: list[str] = []
    _finish_step(thread, said.append)
    assert said == [] and not thread.is_alive()
