"""Two small charts drawn with text: lines in braille dots and horizontal bars.

``plot_lines`` and ``plot_bars`` are pure (series in, Rich text lines out); the widgets only
hold the data and redraw at their size. Curves grow by ``LineChart.extend``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rich.text import Text
from textual.widget import Widget

_BRAILLE_BASE = 0x2800
# Dot bit of braille cell column c (0, 1) and row r (0..3, top to bottom).
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
AXIS_WIDTH = 8
# A growing curve is redrawn a few times a second, however fast its points come.
REDRAW_EVERY = 0.25


@dataclass
class Series:
    name: str
    color: str
    points: list[tuple[float, float]] = field(default_factory=list)


def _label(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def _power_label(exponent: float) -> str:
    value = 10**exponent
    return f"{value:.2g}" if value < 0.01 else _label(round(value, 3))


def _line_dots(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """Bresenham between two dots, both ends included."""
    dots = []
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        dots.append((x0, y0))
        if x0 == x1 and y0 == y1:
            return dots
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy


def plot_lines(
    series: Sequence[Series],
    width: int,
    height: int,
    *,
    y_min: float | None = None,
    y_max: float | None = None,
    x_labels: tuple[str, str] | None = None,
    y_format: Callable[[float], str] | None = None,
) -> list[Text]:
    """``height`` lines of ``width`` cells: a y axis, the curves and an x axis with labels."""
    y_label = y_format or _label
    plot_w = max(1, width - AXIS_WIDTH - 1)
    plot_h = max(1, height - 2)
    points = [p for s in series for p in s.points if math.isfinite(p[1])]
    lines: list[Text] = []
    if not points:
        blank = ["" for _ in range(plot_h)]
        blank[plot_h // 2] = "waiting for data".center(plot_w)
        lines = [Text(" " * AXIS_WIDTH + "│" + row) for row in blank]
        x_labels = x_labels or ("", "")
    else:
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        lo = min(ys) if y_min is None else y_min
        hi = max(ys) if y_max is None else y_max
        if hi <= lo:  # a level line: centre it in a narrow band around its value
            level, pad = lo, abs(lo) * 0.01 or 0.5
            hi = level + pad if y_max is None else hi
            lo = level - pad if y_min is None else lo
            if hi <= lo:
                hi = lo + pad
        x_lo, x_hi = min(xs), max(xs)
        x_span = (x_hi - x_lo) or 1.0
        cols, rows = plot_w * 2, plot_h * 4
        cells: list[list[int]] = [[0] * plot_w for _ in range(plot_h)]
        colors: list[list[str]] = [[""] * plot_w for _ in range(plot_h)]
        for s in series:
            previous: tuple[int, int] | None = None
            for x, y in s.points:
                if not math.isfinite(y):
                    previous = None
                    continue
                dx = round((x - x_lo) / x_span * (cols - 1))
                dy = round((hi - min(hi, max(lo, y))) / (hi - lo) * (rows - 1))
                if x_hi == x_lo:  # one moment only: a level line reads better than a dot
                    dots = _line_dots(0, dy, cols - 1, dy)
                elif previous is None:
                    dots = [(dx, dy)]
                else:
                    dots = _line_dots(*previous, dx, dy)
                for cx, cy in dots:
                    cells[cy // 4][cx // 2] |= _DOTS[cx % 2][cy % 4]
                    colors[cy // 4][cx // 2] = s.color
                previous = (dx, dy)
        for r in range(plot_h):
            if r == 0:
                axis = y_label(hi)
            elif r == plot_h - 1:
                axis = y_label(lo)
            else:
                axis = ""
            line = Text(
                axis.rjust(AXIS_WIDTH)[-AXIS_WIDTH:] + "┤" if axis else " " * AXIS_WIDTH + "│"
            )
            # One span per run of a colour: a Text of a few spans renders much faster than
            # one of a span per cell.
            row, row_colors = cells[r], colors[r]
            start = 0
            for c in range(1, plot_w + 1):
                if c == plot_w or row_colors[c] != row_colors[start]:
                    chars = "".join(chr(_BRAILLE_BASE + b) if b else " " for b in row[start:c])
                    line.append(chars, style=row_colors[start] or None)
                    start = c
            lines.append(line)
        if x_labels is None:
            x_labels = (_label(x_lo), _label(x_hi))
    left, right = x_labels or ("", "")
    lines.append(Text(" " * AXIS_WIDTH + "└" + "─" * plot_w))
    labels = Text(" " * (AXIS_WIDTH + 1))
    labels.append(left)
    labels.append(" " * max(1, plot_w - len(left) - len(right)))
    labels.append(right)
    lines.append(labels)
    return lines[:height]


def legend(series: Sequence[Series]) -> str:
    """The series' names in their colours, as Textual markup (for a border subtitle)."""
    return "  ".join(f"[{s.color}]━[/] {s.name}" for s in series)


def plot_bars(
    bars: Sequence[tuple[str, int]], width: int, height: int, color: str = "green"
) -> list[Text]:
    """One horizontal bar per (label, value), longest = the largest value."""
    if not bars:
        return [Text("no data yet")]
    label_w = min(16, max(len(label) for label, _ in bars))
    value_w = max(len(f"{value:,}") for _, value in bars)
    bar_w = max(1, width - label_w - value_w - 3)
    top = max(value for _, value in bars) or 1
    lines = []
    for label, value in bars[:height]:
        eighths = round(value / top * bar_w * 8)
        full, part = divmod(eighths, 8)
        bar = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")
        line = Text(label[:label_w].ljust(label_w) + " ")
        line.append(bar.ljust(bar_w), style=color)
        line.append(f" {value:>{value_w},}")
        lines.append(line)
    return lines


class LineChart(Widget):
    """Curves that grow: ``extend(name, points)`` adds points and redraws."""

    DEFAULT_CSS = """
    LineChart { height: 1fr; min-height: 6; }
    """

    def __init__(
        self,
        title: str,
        series: Sequence[tuple[str, str]],
        *,
        y_min: float | None = None,
        y_max: float | None = None,
        max_points: int = 2000,
        x_format: Callable[[float], str] = _label,
        log_y: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.border_title = title
        self.series = [Series(name, color) for name, color in series]
        self.border_subtitle = legend(self.series)
        self.y_min = y_min
        self.y_max = y_max
        self.max_points = max_points
        self.x_labels: tuple[str, str] | None = None
        self.x_format = x_format
        self.log_y = log_y
        self._redraw_due = False

    def _series(self, name: str) -> Series:
        return next(s for s in self.series if s.name == name)

    def replace(self, name: str, points: Sequence[tuple[float, float]]) -> None:
        self._series(name).points = list(points)[-self.max_points :]
        self.refresh()

    def extend(self, name: str, points: Sequence[tuple[float, float]]) -> None:
        """Add points; the chart redraws at most every ``REDRAW_EVERY`` seconds."""
        s = self._series(name)
        s.points.extend(points)
        del s.points[: -self.max_points]
        if not self._redraw_due:
            self._redraw_due = True
            self.set_timer(REDRAW_EVERY, self._redraw)

    def _redraw(self) -> None:
        self._redraw_due = False
        self.refresh()

    def last_x(self, name: str) -> float | None:
        points = self._series(name).points
        return points[-1][0] if points else None

    def render(self) -> Text:
        labels = self.x_labels
        xs = [p[0] for s in self.series for p in s.points]
        if labels is None and xs:
            labels = (self.x_format(min(xs)), self.x_format(max(xs)))
        series = self.series
        y_format = None
        if self.log_y:
            # Losses span decades: a log scale keeps the late, small changes visible.
            series = [
                Series(s.name, s.color, [(x, math.log10(y)) for x, y in s.points if y > 0])
                for s in self.series
            ]
            y_format = _power_label
        lines = plot_lines(
            series,
            self.content_size.width,
            self.content_size.height,
            y_min=self.y_min,
            y_max=self.y_max,
            x_labels=labels,
            y_format=y_format,
        )
        return Text("\n").join(lines)


class BarChart(Widget):
    """Horizontal bars, one per label."""

    DEFAULT_CSS = """
    BarChart { height: 1fr; min-height: 3; }
    """

    def __init__(self, title: str, *, color: str = "green", id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = title
        self.color = color
        self.bars: list[tuple[str, int]] = []

    def set_bars(self, bars: Sequence[tuple[str, int]]) -> None:
        self.bars = list(bars)
        self.refresh()

    def render(self) -> Text:
        size = self.content_size
        return Text("\n").join(plot_bars(self.bars, size.width, size.height, self.color))
