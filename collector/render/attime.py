"""Graphite's ``from``/``until`` time forms, parsed exactly as graphite-web 1.1's attime.py.

Pure: no clock is read unless ``now`` is omitted. Arithmetic on offsets is absolute (as
pytz's ``normalize`` does), wall-clock references (``midnight``, ``20240101``) are local to
the requested time zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "parse_at_time", "parse_time_offset", "parse_time_reference", "get_timezone",
    "epoch_seconds", "interval_seconds",
]

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def get_timezone(name: str | None) -> tzinfo:
    """The zone called ``name``; UTC when empty or unknown (graphite ignores unknown zones)."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def epoch_seconds(dt: datetime) -> int:
    """Whole epoch seconds of an aware datetime (sub-second part dropped, as graphite does)."""
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1))


def _localize(naive: datetime, tz: tzinfo) -> datetime:
    """Attach ``tz`` to a wall-clock time like pytz's ``localize(is_dst=False)``."""
    first = naive.replace(tzinfo=tz, fold=0)
    second = naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    for candidate in (first, second):
        if candidate.dst() == timedelta(0):
            return candidate
    return first


def _normalize(dt: datetime, tz: tzinfo) -> datetime:
    return dt.astimezone(UTC).astimezone(tz)


def parse_at_time(text: str | datetime, tz: tzinfo | None = None,
                  now: str | datetime | None = None) -> datetime:
    """Parse ``-1h``, ``now``, epoch seconds, ``HH:MM_YYYYMMDD``, ``midnight+1d`` and the like."""
    tz = tz or UTC
    if isinstance(text, datetime):
        return text.astimezone(tz) if text.tzinfo else _localize(text, tz)
    if not isinstance(text, str):
        raise TypeError(f"time must be a string, not {type(text).__name__}")
    s = text.strip().lower().replace("_", "").replace(",", "").replace(" ", "")
    if s.isdigit():
        if len(s) == 8 and int(s[:4]) > 1900 and int(s[4:6]) < 13 and int(s[6:]) < 32:
            pass  # YYYYMMDD, not a timestamp
        else:
            return datetime.fromtimestamp(int(s), tz)
    if "+" in s:
        ref, offset = s.split("+", 1)
        offset = "+" + offset
    elif "-" in s:
        ref, offset = s.split("-", 1)
        offset = "-" + offset
    else:
        ref, offset = s, ""
    base = parse_time_reference(ref, tz, now)
    return _normalize(base.astimezone(UTC) + parse_time_offset(offset), tz)


def parse_time_reference(ref: str, tz: tzinfo | None = None,
                         now: str | datetime | None = None) -> datetime:
    """The reference part of an at-time: ``now``, ``noon``, ``yesterday``, ``20240101``..."""
    tz = tz or UTC
    now_dt = datetime.now(tz) if now is None else parse_at_time(now, tz)
    if not ref or ref == "now":
        return now_dt
    raw_ref = ref
    hour, minute = 0, 0
    i = ref.find(":")
    if 0 < i < 3:
        hour = int(ref[:i])
        minute = int(ref[i + 1:i + 3])
        ref = ref[i + 3:]
        if ref[:2] == "am":
            ref = ref[2:]
        elif ref[:2] == "pm":
            hour = (hour + 12) % 24
            ref = ref[2:]
    i = ref.find("am")
    if 0 < i < 3:
        hour = int(ref[:i])
        ref = ref[i + 2:]
    i = ref.find("pm")
    if 0 < i < 3:
        hour = (int(ref[:i]) + 12) % 24
        ref = ref[i + 2:]
    if ref.startswith("noon"):
        hour, minute = 12, 0
        ref = ref[4:]
    elif ref.startswith("midnight"):
        hour, minute = 0, 0
        ref = ref[8:]
    elif ref.startswith("teatime"):
        hour, minute = 16, 0
        ref = ref[7:]
    ref_date = now_dt.replace(hour=hour, minute=minute, second=0, microsecond=0, tzinfo=None)
    if ref in ("yesterday", "today", "tomorrow"):
        if ref == "yesterday":
            ref_date -= timedelta(days=1)
        elif ref == "tomorrow":
            ref_date += timedelta(days=1)
    elif ref.count("/") == 2:
        m, d, y = map(int, ref.split("/"))
        if y < 1900:
            y += 1900
        if y < 1970:
            y += 100
        ref_date = datetime(year=y, month=m, day=d, hour=hour, minute=minute)
    elif len(ref) == 8 and ref.isdigit():
        ref_date = datetime(year=int(ref[:4]), month=int(ref[4:6]), day=int(ref[6:8]),
                            hour=hour, minute=minute)
    elif ref[:3] in _MONTHS:
        if ref[-2:].isdigit():
            day = int(ref[-2:])
        elif ref[-1:].isdigit():
            day = int(ref[-1:])
        else:
            raise ValueError("Day of month required after month name")
        ref_date = datetime(year=ref_date.year, month=_MONTHS.index(ref[:3]) + 1, day=day,
                            hour=hour, minute=minute)
    elif ref[:3] in _WEEKDAYS:
        today = _WEEKDAYS.index(ref_date.strftime("%a").lower()[:3])
        day_offset = today - (_WEEKDAYS * 2).index(ref[:3])
        if day_offset < 0:
            day_offset += 7
        ref_date -= timedelta(days=day_offset)
    elif ref:
        raise ValueError(f"Unknown day reference: {raw_ref}")
    return _localize(ref_date, tz)


def _unit_string(unit: str) -> str:
    if unit.startswith("s"):
        return "seconds"
    if unit.startswith("min"):
        return "minutes"
    if unit.startswith("h"):
        return "hours"
    if unit.startswith("d"):
        return "days"
    if unit.startswith("w"):
        return "weeks"
    if unit.startswith("mon"):
        return "months"
    if unit.startswith("y"):
        return "years"
    raise ValueError(f"Invalid offset unit '{unit}'")


def parse_time_offset(offset: str) -> timedelta:
    """``-5min``, ``+1h``, ``2d3h``: months are 30 days and years 365, as in graphite."""
    if not isinstance(offset, str):
        raise TypeError(f"offset must be a string, not {type(offset).__name__}")
    if not offset:
        return timedelta()
    total = timedelta()
    if offset[0].isdigit():
        sign = 1
    else:
        if offset[0] not in "+-":
            raise ValueError(f"Invalid offset: {offset}")
        sign = 1 if offset[0] == "+" else -1
        offset = offset[1:]
    while offset:
        i = 1
        while offset[:i].isdigit() and i <= len(offset):
            i += 1
        digits = offset[:i - 1]
        if not digits:
            raise ValueError(f"Invalid offset: number expected at {offset!r}")
        num = int(digits)
        offset = offset[i - 1:]
        i = 1
        while offset[:i].isalpha() and i <= len(offset):
            i += 1
        unit = _unit_string(offset[:i - 1])
        offset = offset[i - 1:]
        if unit == "months":
            unit, num = "days", num * 30
        elif unit == "years":
            unit, num = "days", num * 365
        total += timedelta(**{unit: sign * num})
    return total


def interval_seconds(text: str) -> int:
    """Length of an interval string in whole seconds (sign kept), as graphite computes it."""
    delta = parse_time_offset(text)
    return delta.days * 86400 + delta.seconds
