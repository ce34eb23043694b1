"""ConvConnector: channel mapping, resizing and argument checks."""

import pytest
import torch
from mmengine.registry import MODELS

from kd_plugin.models import ConvConnector


def test_maps_channels_and_resizes_to_teacher_size():
    connector = ConvConnector(4, 6)
    student = torch.randn(2, 4, 8, 8)
    assert connector(student).shape == (2, 6, 8, 8)
    assert connector(student, size=(4, 4)).shape == (2, 6, 4, 4)
    assert connector(student, size=(16, 12)).shape == (2, 6, 16, 12)


def test_default_norm_is_batch_norm_without_conv_bias():
    connector = ConvConnector(4, 6)
    assert isinstance(connector.norm, torch.nn.BatchNorm2d)
    assert connector.conv.bias is None


def test_without_norm_the_conv_has_a_bias():
    connector = ConvConnector(4, 6, norm_cfg=None)
    assert isinstance(connector.norm, torch.nn.Identity)
    assert connector.conv.bias is not None


def test_nearest_resize_repeats_cells():
    connector = ConvConnector(2, 2, norm_cfg=None, resize_mode='nearest')
    student = torch.randn(1, 2, 2, 2)
    mapped = connector(student, size=(4, 4))
    torch.testing.assert_close(mapped[..., ::2, ::2], connector(student))


def test_registered_in_kd_plugin_scope():
    connector = MODELS.build(dict(type='kd_plugin.ConvConnector', in_channels=3, out_channels=5))
    assert isinstance(connector, ConvConnector)


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(in_channels=0, out_channels=4), 'in_channels must be an int > 0, got 0'),
        (dict(in_channels=4, out_channels=2.5), 'out_channels must be an int > 0, got 2.5'),
        (dict(in_channels=4, out_channels=4, resize_mode='area'), 'resize_mode must be'),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvConnector(**kwargs)
