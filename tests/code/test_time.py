from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from loopml._time import as_utc


def test_a_naive_time_is_taken_to_be_utc() -> None:
    moment = as_utc(datetime(2024, 5, 1, 12, 30))
    assert moment == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)


def test_an_aware_time_is_converted_to_utc() -> None:
    paris = timezone(timedelta(hours=2))
    moment = as_utc(datetime(2024, 5, 1, 14, 30, tzinfo=paris))
    assert moment == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert moment.tzinfo is UTC
    assert moment.hour == 12


def test_a_utc_time_stays_as_it_is() -> None:
    moment = datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=UTC)
    assert as_utc(moment) == moment
    assert as_utc(moment).microsecond == 123456
