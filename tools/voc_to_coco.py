"""Convert a Pascal VOC data set (XML annotations) into COCO JSON files, one per split.

Usage:
    python tools/voc_to_coco.py data/bccd/BCCD --classes RBC WBC Platelets \
        --splits train val test --out-dir data/bccd/annotations

Boxes that reach past the image are clipped and boxes narrower or shorter than --min-size
pixels are dropped; the counts of both are printed per split.
"""

import argparse
import os
import os.path as osp

from kd_plugin.datasets import convert_voc_to_coco, read_image_set


def parse_args():
    parser = argparse.ArgumentParser(description='Convert Pascal VOC XML to COCO JSON')
    parser.add_argument('voc_root', help='folder with Annotations/ and ImageSets/Main/')
    parser.add_argument('--classes', nargs='+', required=True, help='class names, in id order')
    parser.add_argument('--splits', nargs='+', default=['train', 'val', 'test'])
    parser.add_argument('--out-dir', required=True, help='where <split>.json files are written')
    parser.add_argument(
        '--min-size', type=float, default=2.0, help='drop boxes below this width or height (px)'
    )
    return parser.parse_args()


def main():
    args = parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for split in args.splits:
        split_file = osp.join(args.voc_root, 'ImageSets', 'Main', f'{split}.txt')
        if not osp.isfile(split_file):
            raise SystemExit(f'split file not found: {split_file}; check voc_root and --splits')
        out_file = osp.join(args.out_dir, f'{split}.json')
        stats = convert_voc_to_coco(
            osp.join(args.voc_root, 'Annotations'),
            read_image_set(split_file),
            args.classes,
            out_file,
            min_size=args.min_size,
        )
        per_class = ', '.join(f'{name} {count}' for name, count in stats.boxes_per_class.items())
        print(
            f'{split}: {stats.images} images, {stats.boxes} boxes ({per_class}); '
            f'clipped {stats.clipped_boxes}, dropped {stats.dropped_boxes} -> {out_file}'
        )


if __name__ == '__main__':
    main()
