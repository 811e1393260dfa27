"""The compile report: a JSON-serialisable record of what every stage did and what it cost."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class StageReport:
    """One pass or build step. ``lossy`` stages must carry a measured ``error``."""

    name: str
    lossy: bool = False
    summary: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    error: dict | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    model: str = ""
    calibration: str = ""
    stages: list[StageReport] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)

    def stage(self, name: str, lossy: bool = False) -> StageReport:
        s = StageReport(name, lossy)
        self.stages.append(s)
        return s

    def to_dict(self) -> dict:
        """The report as plain dicts and lists (what meta.json stores under ``report``)."""
        return asdict(self)

    def to_json(self) -> str:
        """The report as a JSON string (``print(model.report.to_json())``)."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, d: dict) -> "Report":
        stages = [StageReport(**s) for s in d.get("stages", [])]
        return cls(model=d.get("model", ""), calibration=d.get("calibration", ""), stages=stages, sizes=d.get("sizes", {}))
