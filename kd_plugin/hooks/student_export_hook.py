"""Export the student of the final and best distillation checkpoints when training ends."""

import glob
import os.path as osp
from typing import List

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log

from ..registry import HOOKS
from ..utils.checkpoint import export_student_checkpoint

STUDENT_SUFFIX = '_student.pth'


def find_checkpoints(work_dir: str) -> List[str]:
    """Return the latest checkpoint named in ``work_dir/last_checkpoint`` and any best ones."""
    found = []
    last_file = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last_file):
        with open(last_file) as f:
            last = f.read().strip()
        if osp.isfile(last):
            found.append(last)
    best = sorted(glob.glob(osp.join(work_dir, 'best_*.pth')))
    found += [path for path in best if not path.endswith(STUDENT_SUFFIX) and path not in found]
    return found


@HOOKS.register_module()
class StudentExportHook(Hook):
    """After training, write ``<checkpoint>_student.pth`` beside the last and best checkpoints.

    The exported files hold the student detector alone, loadable by plain MMYOLO or
    MMDetection (``tools/test.py``, ``init_detector``) without kd_plugin. The full checkpoints
    are kept, so resuming still works. Only the main process writes.
    """

    priority = 'LOWEST'

    def after_train(self, runner) -> None:
        if not is_main_process():
            return
        checkpoints = find_checkpoints(runner.work_dir)
        if not checkpoints:
            print_log(
                f'no checkpoint in {runner.work_dir} to export the student from; enable '
                'CheckpointHook to get a student-only checkpoint',
                logger='current',
                level=30,
            )
        for checkpoint in checkpoints:
            export_student_checkpoint(checkpoint, checkpoint[: -len('.pth')] + STUDENT_SUFFIX)
