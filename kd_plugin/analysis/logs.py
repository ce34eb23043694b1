"""Read the scalars MMEngine's LocalVisBackend logs during training and evaluation.

A work dir contains one ``<timestamp>/vis_data/scalars.json`` per run (a resumed run adds another).
Each line is a JSON object: training lines carry ``loss*`` keys, ``lr`` and ``step`` (the
iteration), validation lines carry ``coco/bbox_mAP``-style metrics and ``step`` (the epoch).
"""

import glob
import json
import os.path as osp
from typing import Dict, List, Optional

METRIC_KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75')


def scalar_files(work_dir: str) -> List[str]:
    """Return the run's scalars.json files, oldest run first."""
    return sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))


def read_scalars(work_dir: str) -> Dict[str, List[dict]]:
    """Split every logged line of a work dir into ``train`` and ``val`` records.

    Returns:
        ``{'train': [...], 'val': [...]}``; each record is the logged dict. Records of a resumed
        run replace the ones of earlier runs from the same step on.
    """
    train: Dict[int, dict] = {}
    val: Dict[int, dict] = {}
    for path in scalar_files(work_dir):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                record = json.loads(line)
                if METRIC_KEYS[0] in record:
                    val[record['step']] = record
                elif any(key.startswith('loss') for key in record):
                    train[record['step']] = record
    return {
        'train': [train[step] for step in sorted(train)],
        'val': [val[step] for step in sorted(val)],
    }


def final_metrics(work_dir: str) -> Optional[dict]:
    """Return the last validation record of a work dir (mAP, mAP50, mAP75 and its epoch)."""
    val = read_scalars(work_dir)['val']
    if not val:
        return None
    return summarize_metrics(val[-1])


def best_metrics(work_dir: str, key: str = METRIC_KEYS[0]) -> Optional[dict]:
    """Return the validation record with the highest ``key``."""
    val = read_scalars(work_dir)['val']
    if not val:
        return None
    return summarize_metrics(max(val, key=lambda record: record[key]))


def summarize_metrics(record: dict) -> dict:
    """Keep the COCO bbox mAP, mAP50 and mAP75 of a record, under short names."""
    summary = {name: record.get(key) for name, key in zip(('mAP', 'mAP50', 'mAP75'), METRIC_KEYS)}
    if 'step' in record:
        summary['epoch'] = record['step']
    return summary
