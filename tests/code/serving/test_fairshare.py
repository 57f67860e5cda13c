"""The fair share of explanations among keys (units, in a real event loop; the real server is
in tests/api/test_explain_route.py)."""

from __future__ import annotations

import asyncio

import pytest

from loopml.errors import RateLimitedError
from loopml.serving.fairshare import FairShare


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def share(clock: Clock | None = None, **kwargs: float) -> FairShare:
    options = {"slots": 1, "max_waiting": 4, "wait_s": 30.0, "seconds_per_min": 15.0}
    options.update(kwargs)
    return FairShare(
        slots=int(options["slots"]),
        max_waiting=int(options["max_waiting"]),
        wait_s=options["wait_s"],
        seconds_per_min=options["seconds_per_min"],
        clock=clock or Clock(),
    )


def test_turns_go_round_the_keys() -> None:
    """A holds the slot and queues again at once; B, arriving between, goes before A's next."""

    async def main() -> list[str]:
        gate = share()
        order: list[str] = []
        release = asyncio.Event()

        async def work(key: str, hold: asyncio.Event | None = None) -> None:
            async with gate.turn(key):
                order.append(key)
                if hold is not None:
                    await hold.wait()

        first = asyncio.create_task(work("A", release))
        await asyncio.sleep(0)
        b = asyncio.create_task(work("B"))
        await asyncio.sleep(0)
        # A again while its first request runs: refused, one at a time per key
        with pytest.raises(RateLimitedError, match="one at a time"):
            async with gate.turn("A"):
                pass
        c = asyncio.create_task(work("C"))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, b, c)
        await work("A")
        return order

    assert asyncio.run(main()) == ["A", "B", "C", "A"]


def test_a_key_over_its_seconds_waits_others_do_not() -> None:
    clock = Clock()

    async def main() -> None:
        gate = share(clock, seconds_per_min=15.0)
        async with gate.turn("A"):
            clock.now += 16.0  # one explanation that took 16 s: over the minute's 15
        with pytest.raises(RateLimitedError) as info:
            async with gate.turn("A"):
                pass
        assert "LOOPML_EXPLAIN_SECONDS_PER_MIN" in str(info.value)
        assert info.value.retry_after_s == 4  # 1 s over at 0.25 s a second
        async with gate.turn("B"):  # another key is not charged
            pass
        clock.now += 4.0
        async with gate.turn("A"):  # refilled
            pass

    asyncio.run(main())


def test_the_queue_and_the_wait_are_bounded() -> None:
    async def main() -> None:
        gate = share(max_waiting=1, wait_s=0.2)
        hold = asyncio.Event()

        async def work(key: str) -> None:
            async with gate.turn(key):
                await hold.wait()

        running = asyncio.create_task(work("A"))
        await asyncio.sleep(0)
        waiting = asyncio.create_task(work("B"))
        await asyncio.sleep(0)
        with pytest.raises(RateLimitedError, match="waiting"):
            async with gate.turn("C"):
                pass
        with pytest.raises(RateLimitedError, match="within"):
            await waiting  # the slot never came free in time
        hold.set()
        await running
        assert gate.running == 0
        async with gate.turn("C"):  # the slot is free again
            assert gate.running == 1

    asyncio.run(main())


def test_a_cancelled_waiter_gives_its_turn_on() -> None:
    async def main() -> None:
        gate = share()
        hold = asyncio.Event()
        order: list[str] = []

        async def work(key: str) -> None:
            async with gate.turn(key):
                order.append(key)
                await hold.wait()

        running = asyncio.create_task(work("A"))
        await asyncio.sleep(0)
        gone = asyncio.create_task(work("B"))
        await asyncio.sleep(0)
        after = asyncio.create_task(work("C"))
        await asyncio.sleep(0)
        gone.cancel()  # the client of B hung up while waiting
        hold.set()
        await asyncio.gather(running, after, gone, return_exceptions=True)
        assert order == ["A", "C"]
        assert gate.running == 0

    asyncio.run(main())
