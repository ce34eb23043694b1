"""Fixtures of the optimizer tests."""

import uuid
from typing import Callable, Iterator

import pytest
from tiny_yolov5_distiller import ToyFeatureDistiller, build_toy_distiller, drop_mmengine_instances


@pytest.fixture
def toy_distiller_factory() -> Callable[..., ToyFeatureDistiller]:
    return build_toy_distiller


@pytest.fixture
def mmengine_instance_name() -> Iterator[str]:
    """Yield a unique name prefix for MMEngine global instances and drop them afterwards."""
    prefix = f'kd_plugin_optim_test_{uuid.uuid4().hex}'
    yield prefix
    drop_mmengine_instances(prefix)
