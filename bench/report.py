"""The benchmark's results: one row per figure, with its target and whether it was met, printed as one
table and written as JSON."""

from __future__ import annotations

import json
import operator
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


@dataclass
class Row:
    """One figure. `op` and `goal` make it a target (met or missed); without them it is for information."""

    scenario: str
    figure: str
    value: float | None
    unit: str = ""
    op: str | None = None
    goal: float | None = None
    note: str = ""

    @property
    def target(self) -> str:
        return f"{self.op} {_number(self.goal)} {self.unit}".strip() if self.op else ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "not measured" + (f" ({self.note})" if self.note else "")
        if self.op is None:
            return self.note
        if COMPARE[self.op](self.value, self.goal):
            verdict = "met"
        else:
            gap = abs(self.value - self.goal)
            times = (self.value / self.goal if self.op in ("<=", "<") else self.goal / self.value) \
                if self.value and self.goal else None
            verdict = f"missed by {_number(gap)} {self.unit}".rstrip()
            if times and times >= 1.05:
                verdict += f" ({times:.1f}x)"
        return verdict + (f"; {self.note}" if self.note else "")

    def as_dict(self) -> dict:
        return {**asdict(self), "target": self.target, "verdict": self.verdict,
                "met": None if self.op is None or self.value is None else COMPARE[self.op](self.value, self.goal)}


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@dataclass
class Results:
    meta: dict
    rows: list[Row] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    profiles: dict = field(default_factory=dict)

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)

    def table(self, scenario: str | None = None) -> str:
        """The rows as a table: all of them, or one scenario's."""
        header = ("scenario", "figure", "value", "target", "verdict")
        lines = [(r.scenario, r.figure, f"{_number(r.value)} {r.unit}".strip() if r.value is not None else "-",
                  r.target, r.verdict) for r in self.rows if scenario in (None, r.scenario)]
        widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=False)]
        widths[-1] = len(header[-1])  # the verdict is the last column: no padding
        rule = "  ".join("-" * w for w in widths[:-1]) + "  " + "-" * 20
        out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(), rule]
        for line in lines:
            out.append("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
        return "\n".join(out)

    def as_dict(self) -> dict:
        return {"meta": self.meta, "rows": [r.as_dict() for r in self.rows], "details": self.details,
                "profiles": self.profiles}

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2, default=str) + "\n")


def machine() -> dict:
    """Where and when: the load matters, the machine is shared."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                  cwd=Path(__file__).parent).stdout.strip()
        except OSError:
            return ""

    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        uptime = ""
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "host": platform.node(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "uptime": uptime,
            "load_average": os.getloadavg(), "commit": git("rev-parse", "--short", "HEAD"),
            "branch": git("rev-parse", "--abbrev-ref", "HEAD")}
