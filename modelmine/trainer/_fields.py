"""Reading one table of a job spec while collecting every error, not just the first."""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Mapping

_MISSING = object()


def show(value: object) -> str:
    """A short, unambiguous rendering of a user-supplied value for error messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _range(lo: float, hi: float) -> str:
    return f"{lo:g}..{hi:g}"


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """A ``; did you mean 'x'?`` hint when `key` is a near miss, else an empty string."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class Fields:
    """Typed, bounded access to the keys of one spec table.

    Every accessor returns a usable value even when the input is bad (the default, or a
    placeholder) and records the error, so one pass reports all errors of a spec.
    """

    def __init__(self, path: str, raw: object, errors: list[str]) -> None:
        self.path = path
        self._errors = errors
        self._raw: Mapping[object, object]
        if isinstance(raw, Mapping):
            self._raw = raw
        else:
            errors.append(f"{path}: must be a table, got {show(raw)}")
            self._raw = {}

    def error(self, key: str, message: str) -> None:
        self._errors.append(f"{self.path}.{key}: {message}" if self.path else f"{key}: {message}")

    def has(self, key: str) -> bool:
        return key in self._raw

    def _get(self, key: str, default: object) -> object:
        if key in self._raw:
            return self._raw[key]
        if default is _MISSING:
            self.error(key, "required")
        return default

    def integer(self, key: str, lo: int, hi: int, default: int | None = None) -> int:
        value = self._get(key, _MISSING if default is None else default)
        if isinstance(value, int) and not isinstance(value, bool):
            if lo <= value <= hi:
                return value
            self.error(key, f"must be {lo}..{hi}, got {value}")
        elif value is not _MISSING:
            self.error(key, f"must be an integer {lo}..{hi}, got {show(value)}")
        return lo if default is None else default

    def number(self, key: str, lo: float, hi: float, default: float | None = None) -> float:
        value = self._get(key, _MISSING if default is None else default)
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
            if not math.isfinite(number):
                self.error(key, f"must be a finite number {_range(lo, hi)}, got {show(value)}")
            elif lo <= number <= hi:
                return number
            else:
                self.error(key, f"must be {_range(lo, hi)}, got {value:g}")
        elif value is not _MISSING:
            self.error(key, f"must be a number {_range(lo, hi)}, got {show(value)}")
        return lo if default is None else default

    def choice(self, key: str, options: tuple[str, ...], default: str | None = None) -> str:
        value = self._get(key, _MISSING if default is None else default)
        if isinstance(value, str) and value in options:
            return value
        if value is not _MISSING:
            hint = did_you_mean(value, options) if isinstance(value, str) else ""
            self.error(key, f"must be one of {', '.join(options)}, got {show(value)}{hint}")
        return options[0] if default is None else default

    def text(self, key: str, max_len: int, default: str | None = None, min_len: int = 0) -> str:
        value = self._get(key, _MISSING if default is None else default)
        if isinstance(value, str):
            if min_len <= len(value) <= max_len:
                return value
            self.error(key, f"must be {min_len}..{max_len} characters long, got {len(value)}")
        elif value is not _MISSING:
            self.error(key, f"must be a string, got {show(value)}")
        return "" if default is None else default

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if isinstance(value, bool):
            return value
        self.error(key, f"must be true or false, got {show(value)}")
        return default

    def integers(
        self, key: str, lo: int, hi: int, max_len: int, default: tuple[int, ...], min_len: int = 0
    ) -> tuple[int, ...]:
        if key not in self._raw:
            return default
        value = self._raw[key]
        shape = f"a list of {min_len}..{max_len} integers, each {lo}..{hi}"
        if not isinstance(value, list | tuple) or not min_len <= len(value) <= max_len:
            self.error(key, f"must be {shape}, got {show(value)}")
            return default
        ok = True
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or not lo <= item <= hi:
                self.error(f"{key}[{i}]", f"must be an integer {lo}..{hi}, got {show(item)}")
                ok = False
        return tuple(value) if ok else default

    def reject(self, key: str, reason: str) -> None:
        """Flag `key` when present: it is a known field that does not apply here."""
        if key in self._raw:
            self.error(key, reason)

    def reject_unknown(self, known: Iterable[str]) -> None:
        known = set(known)
        for key in self._raw:
            if not isinstance(key, str):
                self.error(show(key), "keys must be strings")
            elif key not in known:
                self.error(key, f"unknown key{did_you_mean(key, known)}")
