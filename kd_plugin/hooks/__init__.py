from .distill_schedule_hook import DistillScheduleHook, FactorSchedule
from .student_export_hook import StudentExportHook, find_checkpoints

__all__ = ['DistillScheduleHook', 'FactorSchedule', 'StudentExportHook', 'find_checkpoints']
