"""TIR schedules: default CPU schedules, MetaSchedule tuning and tuning databases.

``prepare(mod, target, db, report, lowering)`` is the single entry point a build uses (see
``lower.prepare``); ``Lowering`` is what a target asks of it.
"""

from .lower import FLOAT_FORM_NOTES, Lowering, ScheduleReport, fuse, is_cpu, lowering_pipeline, plain_lowering, prepare

__all__ = ["FLOAT_FORM_NOTES", "Lowering", "ScheduleReport", "fuse", "is_cpu", "lowering_pipeline", "plain_lowering", "prepare"]
