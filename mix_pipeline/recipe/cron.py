"""Cron expressions as Dagster schedules accept them, checked without Dagster so that a recipe
loads (and fails) the same with or without it."""

from __future__ import annotations

import re

_CRON_ALIASES = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually"}
# minute, hour, day of month, month, day of week: (lowest, highest, names)
_CRON_FIELDS = (
    (0, 59, ()), (0, 23, ()), (1, 31, ()),
    (1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    (0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_CRON_PART = re.compile(r"(?P<start>\*|\w+)(?:-(?P<end>\w+))?(?:/(?P<step>\d+))?")


def valid_cron(cron: str) -> bool:
    """A cron expression as Dagster schedules accept it: five fields (numbers, names, ranges, steps,
    lists, `?`, `L` for the last day of the month, `d#n` for the n-th weekday) or an @alias.
    Checked here without Dagster, so the recipe loads (and fails) the same with or without it."""
    cron = cron.strip()
    if cron in _CRON_ALIASES:
        return True
    fields = cron.split()
    if len(fields) != 5:
        return False

    def value(token: str, low: int, high: int, names: tuple) -> bool:
        if token.isdigit():
            return low <= int(token) <= high
        return token.lower() in names

    for i, (field, (low, high, names)) in enumerate(zip(fields, _CRON_FIELDS)):
        day_of_month, day_of_week = i == 2, i == 4
        for part in field.split(","):
            if (part == "?" and (day_of_month or day_of_week)) or (part == "L" and day_of_month):
                continue
            if day_of_week and "#" in part:
                day, _, nth = part.partition("#")
                if not (value(day, low, high, names) and nth.isdigit() and 1 <= int(nth) <= 5):
                    return False
                continue
            m = _CRON_PART.fullmatch(part)
            if not m:
                return False
            start, end, step = m["start"], m["end"], m["step"]
            if start != "*" and not value(start, low, high, names):
                return False
            if end is not None and (start == "*" or not value(end, low, high, names)):
                return False
            if step is not None and int(step) == 0:
                return False
    return True
