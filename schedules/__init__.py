"""TIR schedules: default CPU schedules, MetaSchedule tuning and tuning databases.

``prepare(mod, target, db)`` is the single entry point a build uses (see ``lower.prepare``).
"""

from .lower import ScheduleReport, fuse, is_cpu, lowering_pipeline, prepare

__all__ = ["ScheduleReport", "fuse", "is_cpu", "lowering_pipeline", "prepare"]
