"""StudentExportHook's file handling: which checkpoints it exports and which exports it deletes."""

import os.path as osp

from kd_plugin.hooks.student_export_hook import find_checkpoints, remove_stale_best_exports


def touch(path) -> str:
    with open(path, 'wb') as f:
        f.write(b'checkpoint')
    return str(path)


def test_finds_last_and_best_checkpoints(tmp_path):
    last = touch(tmp_path / 'epoch_20.pth')
    best = touch(tmp_path / 'best_coco_bbox_mAP_epoch_16.pth')
    touch(tmp_path / 'best_coco_bbox_mAP_epoch_16_student.pth')
    (tmp_path / 'last_checkpoint').write_text(last)
    assert find_checkpoints(str(tmp_path)) == [last, best]


def test_stale_best_export_is_deleted(tmp_path):
    # Epoch 16 was the best of a first run; the resumed run replaced it with epoch 24.
    stale = touch(tmp_path / 'best_coco_bbox_mAP_epoch_16_student.pth')
    touch(tmp_path / 'best_coco_bbox_mAP_epoch_24.pth')
    current = touch(tmp_path / 'best_coco_bbox_mAP_epoch_24_student.pth')
    assert remove_stale_best_exports(str(tmp_path)) == [stale]
    assert not osp.exists(stale)
    assert osp.exists(current)


def test_other_exports_are_kept(tmp_path):
    # An epoch export whose checkpoint MMEngine's max_keep_ckpts removed is still a result.
    epoch_export = touch(tmp_path / 'epoch_4_student.pth')
    assert remove_stale_best_exports(str(tmp_path)) == []
    assert osp.exists(epoch_export)
