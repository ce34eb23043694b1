"""Export the student of the final and best distillation checkpoints when training ends."""

import glob
import os
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


def remove_stale_best_exports(work_dir: str) -> List[str]:
    """Delete ``best_*_student.pth`` files whose best checkpoint no longer exists.

    MMEngine's CheckpointHook deletes the previous best checkpoint when a better one is saved,
    for example when a finished run is resumed and trained further. The student export of that
    old best would otherwise stay beside the new one and look like the current best.

    Returns:
        The deleted paths.
    """
    removed = []
    for export in sorted(glob.glob(osp.join(work_dir, 'best_*' + STUDENT_SUFFIX))):
        source = export[: -len(STUDENT_SUFFIX)] + '.pth'
        if not osp.isfile(source):
            os.remove(export)
            removed.append(export)
    return removed


@HOOKS.register_module()
class StudentExportHook(Hook):
    """After training, write ``<checkpoint>_student.pth`` beside the last and best checkpoints.

    The exported files hold the student detector alone, loadable by plain MMYOLO or
    MMDetection (``tools/test.py``, ``init_detector``) without kd_plugin. The full checkpoints
    are kept, so resuming still works. The export of a best checkpoint that MMEngine has since
    replaced is deleted. Only the main process writes.
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
        for export in remove_stale_best_exports(runner.work_dir):
            print_log(
                f'deleted {export}: its best checkpoint was replaced by a better one',
                logger='current',
            )
