"""Convert Pascal VOC XML annotations to a COCO detection JSON file.

VOC stores 1-based, inclusive pixel corners ``(xmin, ymin, xmax, ymax)``. COCO stores
``[x, y, width, height]`` in continuous 0-based pixel coordinates, so a VOC box becomes
``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``. Boxes that reach past the image
are clipped to it, and boxes left narrower or shorter than ``min_size`` pixels are dropped; both
are counted in the returned statistics so that a caller can report them.
"""

import json
import os.path as osp
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence


@dataclass
class ConversionStats:
    """Counts gathered while converting one split."""

    images: int = 0
    boxes: int = 0
    clipped_boxes: int = 0
    dropped_boxes: int = 0
    boxes_per_class: Dict[str, int] = field(default_factory=dict)


def _read_voc_xml(xml_path: str) -> dict:
    """Parse one VOC annotation file into its size and list of named boxes."""
    root = ET.parse(xml_path).getroot()
    size = root.find('size')
    if size is None:
        raise ValueError(f'{xml_path}: missing <size>; VOC annotations must give the image size')
    width = int(float(size.findtext('width')))
    height = int(float(size.findtext('height')))
    if width <= 0 or height <= 0:
        raise ValueError(f'{xml_path}: invalid image size {width}x{height}')
    objects = []
    for obj in root.findall('object'):
        box = obj.find('bndbox')
        corners = [float(box.findtext(key)) for key in ('xmin', 'ymin', 'xmax', 'ymax')]
        objects.append(
            dict(
                name=obj.findtext('name').strip(),
                corners=corners,
                difficult=int(obj.findtext('difficult', default='0')),
            )
        )
    return dict(filename=root.findtext('filename'), width=width, height=height, objects=objects)


def convert_voc_to_coco(
    ann_dir: str,
    image_ids: Sequence[str],
    classes: Sequence[str],
    out_file: Optional[str] = None,
    min_size: float = 2.0,
) -> ConversionStats:
    """Convert the VOC annotations of ``image_ids`` into one COCO JSON file.

    Args:
        ann_dir: Folder with one ``<image_id>.xml`` per image.
        image_ids: Image ids of the split, in the order they get COCO ids 0, 1, 2, ...
        classes: Class names; their order fixes the COCO category ids 0, 1, 2, ...
        out_file: Where to write the JSON. Nothing is written when it is None.
        min_size: Boxes whose clipped width or height is below this many pixels are dropped.
            BCCD has two annotations with ``xmin == xmax``, which this removes.

    Returns:
        Counts of images, kept boxes, clipped boxes, dropped boxes and kept boxes per class.

    Raises:
        FileNotFoundError: An image id has no annotation file.
        ValueError: An annotation names a class that is not in ``classes``.
    """
    class_to_id = {name: index for index, name in enumerate(classes)}
    stats = ConversionStats(boxes_per_class={name: 0 for name in classes})
    images: List[dict] = []
    annotations: List[dict] = []

    for image_index, image_id in enumerate(image_ids):
        xml_path = osp.join(ann_dir, f'{image_id}.xml')
        if not osp.isfile(xml_path):
            raise FileNotFoundError(f'annotation file not found: {xml_path}')
        record = _read_voc_xml(xml_path)
        width, height = record['width'], record['height']
        images.append(
            dict(
                id=image_index,
                file_name=record['filename'] or f'{image_id}.jpg',
                width=width,
                height=height,
            )
        )
        stats.images += 1

        for obj in record['objects']:
            if obj['name'] not in class_to_id:
                raise ValueError(
                    f'{xml_path}: class {obj["name"]!r} is not in the class list {list(classes)}; '
                    'pass the full class list'
                )
            xmin, ymin, xmax, ymax = obj['corners']
            # VOC corners are 1-based and inclusive: shift to 0-based continuous coordinates.
            x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax
            clipped = [
                min(max(x1, 0.0), width),
                min(max(y1, 0.0), height),
                min(max(x2, 0.0), width),
                min(max(y2, 0.0), height),
            ]
            if clipped != [x1, y1, x2, y2]:
                stats.clipped_boxes += 1
            x1, y1, x2, y2 = clipped
            if x2 - x1 < min_size or y2 - y1 < min_size:
                stats.dropped_boxes += 1
                continue
            annotations.append(
                dict(
                    id=len(annotations),
                    image_id=image_index,
                    category_id=class_to_id[obj['name']],
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=(x2 - x1) * (y2 - y1),
                    iscrowd=0,
                    ignore=obj['difficult'],
                )
            )
            stats.boxes += 1
            stats.boxes_per_class[obj['name']] += 1

    if out_file is not None:
        categories = [dict(id=index, name=name) for index, name in enumerate(classes)]
        with open(out_file, 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return stats


def read_image_set(path: str) -> List[str]:
    """Read a VOC ``ImageSets/Main/<split>.txt`` file into a list of image ids."""
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]
