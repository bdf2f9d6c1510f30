"""graphite-web's from/until forms, checked against hand-computed instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from collector.render.attime import (
    epoch_seconds,
    get_timezone,
    interval_seconds,
    parse_at_time,
    parse_time_offset,
)

UTC = UTC
NOW = datetime(2024, 3, 15, 13, 45, 30, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize("text,expected", [
    ("now", NOW),
    ("-1h", NOW - timedelta(hours=1)),
    ("-7d", NOW - timedelta(days=7)),
    ("-5min", NOW - timedelta(minutes=5)),
    ("-30s", NOW - timedelta(seconds=30)),
    ("-2w", NOW - timedelta(weeks=2)),
    ("-1mon", NOW - timedelta(days=30)),
    ("-1y", NOW - timedelta(days=365)),
    ("now-1h30min", NOW - timedelta(hours=1, minutes=30)),
    ("+1h", NOW + timedelta(hours=1)),
    ("midnight", datetime(2024, 3, 15, tzinfo=UTC)),
    ("noon", datetime(2024, 3, 15, 12, tzinfo=UTC)),
    ("teatime", datetime(2024, 3, 15, 16, tzinfo=UTC)),
    ("yesterday", datetime(2024, 3, 14, tzinfo=UTC)),
    ("tomorrow", datetime(2024, 3, 16, tzinfo=UTC)),
    ("midnight+1d", datetime(2024, 3, 16, tzinfo=UTC)),
    ("20240101", datetime(2024, 1, 1, tzinfo=UTC)),
    ("10:30_20240101", datetime(2024, 1, 1, 10, 30, tzinfo=UTC)),
    ("8pm", datetime(2024, 3, 15, 20, tzinfo=UTC)),
    ("3:15pm_20240102", datetime(2024, 1, 2, 15, 15, tzinfo=UTC)),
    ("01/31/2023", datetime(2023, 1, 31, tzinfo=UTC)),
    ("jan5", datetime(2024, 1, 5, tzinfo=UTC)),
    ("monday", datetime(2024, 3, 11, tzinfo=UTC)),
    ("1700000000", datetime.fromtimestamp(1700000000, UTC)),
])
def test_forms(text: str, expected: datetime) -> None:
    assert parse_at_time(text, UTC, NOW) == expected


def test_epoch_drops_fraction() -> None:
    assert epoch_seconds(datetime(1970, 1, 1, 0, 0, 10, 999999, tzinfo=UTC)) == 10


def test_timezone_wall_clock_reference() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    dt = parse_at_time("midnight", berlin, NOW)
    # 13:45 UTC is 14:45 in Berlin (CET, +1): local midnight is 23:00 UTC the day before.
    assert epoch_seconds(dt) == epoch_seconds(datetime(2024, 3, 14, 23, tzinfo=UTC))


def test_offset_across_dst_is_absolute() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2024, 3, 31, 12, tzinfo=berlin)  # DST began at 02:00 that day
    assert epoch_seconds(parse_at_time("-1d", berlin, now)) == epoch_seconds(now) - 86400


def test_unknown_timezone_falls_back_to_utc() -> None:
    assert get_timezone("Not/AZone") is UTC
    assert get_timezone(None) is UTC


@pytest.mark.parametrize("bad", ["-1fortnight", "blah", "-h", "feb"])
def test_bad_forms_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_at_time(bad, UTC, NOW)


def test_offsets() -> None:
    assert parse_time_offset("5min") == timedelta(minutes=5)
    assert parse_time_offset("-1h") == timedelta(hours=-1)
    assert parse_time_offset("1d2h") == timedelta(days=1, hours=2)
    assert interval_seconds("-2min") == -120
    assert interval_seconds("1w") == 7 * 86400
    with pytest.raises(ValueError, match="Invalid offset unit"):
        parse_time_offset("5parsecs")
