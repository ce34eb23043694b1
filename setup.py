import re
from pathlib import Path

from setuptools import find_packages, setup

init_text = Path(__file__).with_name('kd_plugin').joinpath('__init__.py').read_text()
version = re.search(r"__version__ = '([^']+)'", init_text).group(1)

setup(
    name='kd_plugin',
    version=version,
    description='Knowledge distillation for MMYOLO and MMDetection detectors',
    packages=find_packages(include=['kd_plugin', 'kd_plugin.*']),
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.0',
        'mmengine>=0.10.0,<0.11',
        'mmcv>=2.0.0rc4,<2.1',
        'mmdet>=3.0.0,<3.4',
        'mmyolo==0.6.0',
        'albumentations>=1.3',
        'pycocotools>=2.0.7',
        'matplotlib>=3.7',
    ],
)
