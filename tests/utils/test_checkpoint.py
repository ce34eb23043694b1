"""Checkpoint loading under torch.load(weights_only=True), and the allow-list's limits."""

import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from kd_plugin.utils import (
    export_student_checkpoint,
    load_checkpoint_file,
    slim_checkpoint,
    student_state_dict,
)


class StatisticsMethodProbe:
    """Pickles as getattr(HistoryBuffer, '__init__'): not a statistics method."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


class Unlisted:
    """A class no allow-list names."""


def mmengine_like_checkpoint(path, **extra):
    hub = MessageHub.get_instance('kd_plugin_checkpoint_test')
    hub.update_scalar('train/loss', 1.5)
    checkpoint = {
        'meta': {'epoch': 3, 'dataset_meta': {'classes': ('RBC', 'WBC')}},
        'state_dict': {
            'student.conv.weight': torch.ones(2, 2),
            'teacher_free.bias': torch.zeros(2),
        },
        'message_hub': hub.state_dict(),
        **extra,
    }
    torch.save(checkpoint, path)
    return str(path)


def test_mmengine_checkpoint_loads_with_weights_only_default(tmp_path):
    path = mmengine_like_checkpoint(tmp_path / 'ckpt.pth')
    checkpoint = torch.load(path, map_location='cpu')
    history = checkpoint['message_hub']['log_scalars']['train/loss']
    assert isinstance(history, HistoryBuffer)
    assert history.current() == 1.5


def test_getattr_beyond_history_buffer_statistics_is_refused(tmp_path):
    path = mmengine_like_checkpoint(tmp_path / 'crafted.pth', probe=StatisticsMethodProbe())
    with pytest.raises(RuntimeError, match='outside the safe allow-list.*trust_checkpoint=True'):
        load_checkpoint_file(path)
    assert load_checkpoint_file(path, trusted=True)['probe'] == HistoryBuffer.__init__


def test_unlisted_class_needs_trust(tmp_path):
    path = mmengine_like_checkpoint(tmp_path / 'unlisted.pth', extra=Unlisted())
    with pytest.raises(RuntimeError, match='outside the safe allow-list'):
        load_checkpoint_file(path)
    assert isinstance(load_checkpoint_file(path, trusted=True)['extra'], Unlisted)


def test_missing_checkpoint_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing_here.pth'):
        load_checkpoint_file(str(tmp_path / 'nothing_here.pth'))


def test_student_export_keeps_student_weights_and_plain_meta(tmp_path):
    src = mmengine_like_checkpoint(tmp_path / 'kd.pth')
    dst = export_student_checkpoint(src, str(tmp_path / 'student.pth'))
    exported = torch.load(dst, map_location='cpu', weights_only=True)
    assert list(exported['state_dict']) == ['conv.weight']
    assert exported['meta']['epoch'] == 3
    assert exported['meta']['dataset_meta'] == {'classes': ('RBC', 'WBC')}


def test_export_of_a_plain_checkpoint_is_refused():
    with pytest.raises(ValueError, match="no 'student.' weights"):
        student_state_dict({'backbone.conv.weight': torch.ones(1)})


def test_slim_checkpoint_in_half_precision(tmp_path):
    src = mmengine_like_checkpoint(tmp_path / 'full.pth')
    dst = slim_checkpoint(src, str(tmp_path / 'slim.pth'), half=True)
    slim = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(slim) == {'meta', 'state_dict'}
    assert slim['state_dict']['student.conv.weight'].dtype == torch.float16
