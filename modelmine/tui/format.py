"""How numbers, ids, times and progress read on screen. Pure functions, no Textual."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.text import Text

STATUS_STYLES: Mapping[str, str] = {
    "PENDING": "yellow",
    "RUNNING": "bold cyan",
    "COMPLETED": "bold green",
    "FAILED": "bold red",
    "CANCELED": "magenta",
    "ONLINE": "green",
    "BUSY": "cyan",
    "MAINTENANCE": "magenta",
    "SUSPECT": "yellow",
    "OFFLINE": "bold red",
}
BAR_WIDTH = 12


@dataclass(frozen=True)
class Clock:
    """Where "now" comes from and which time zone times are shown in (tests pin both)."""

    now: Callable[[], float] = time.time
    tz: datetime.tzinfo | None = None

    def when(self, unix_seconds: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        if not unix_seconds:
            return "-"
        return datetime.datetime.fromtimestamp(unix_seconds, tz=self.tz).strftime(fmt)

    def ago(self, unix_seconds: float | None) -> str:
        if not unix_seconds:
            return "never"
        delta = max(0.0, self.now() - unix_seconds)
        if delta < 60:
            return f"{delta:.0f}s ago"
        if delta < 3600:
            return f"{delta / 60:.0f}m ago"
        if delta < 86400:
            return f"{delta / 3600:.1f}h ago"
        return f"{delta / 86400:.1f}d ago"


def short(hex_id: str | None, n: int = 8) -> str:
    return hex_id[:n] if hex_id else "-"


def credits(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def percent(value: float | None, digits: int = 1) -> str:
    """A fraction 0..1 as a percentage."""
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def status_text(status: str) -> Text:
    mark = "✕ " if status == "OFFLINE" else ""
    return Text(mark + status, style=STATUS_STYLES.get(status, ""))


def progress_bar(progress: float, status: str, width: int = BAR_WIDTH) -> Text:
    """A bar of ``width`` cells with eighths, then the percentage: ``█████▌      46%``."""
    fraction = min(1.0, max(0.0, progress / 100))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")
    style = STATUS_STYLES.get(status, "")
    text = Text(bar.ljust(width), style=style)
    text.append(f" {progress:5.1f}%")
    return text


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def load(values: Any) -> str:
    if not isinstance(values, list | tuple) or not values:
        return "-"
    return " ".join(f"{float(v):.2f}" for v in values[:3])


def record_detail(kind: str, payload: Mapping[str, Any] | None, names: Mapping[str, str]) -> str:
    """One line saying what a ledger record does."""
    p = payload or {}

    def who(key: str) -> str:
        value = p.get(key)
        return names.get(value, short(value)) if isinstance(value, str) else "-"

    if kind == "account.register":
        return f"name {p.get('name', '?')!r}"
    if kind == "transfer":
        return f"{p.get('amount', '?')} credits to {who('to')}"
    if kind == "job.submit":
        spec = p.get("spec") or {}
        return f"job {spec.get('title', '?')!r}, stake {p.get('stake', '?')}"
    if kind == "job.checkpoint":
        return f"job {short(p.get('job_id'))} step {p.get('step', '?')}"
    if kind == "job.complete":
        return f"job {short(p.get('job_id'))} done, model {short(p.get('model_sha256'))}"
    if kind == "job.fail":
        return f"job {short(p.get('job_id'))}: {p.get('reason', '?')}"
    if kind.startswith("job."):
        return f"job {short(p.get('job_id'))}"
    return ""
