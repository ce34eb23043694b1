"""VOC to COCO conversion on real BCCD annotations and on a hand-made file with bad boxes."""

import json

import pytest

from kd_plugin.datasets import convert_voc_to_coco
from tests.conftest import BCCD_CLASSES, BCCD_VOC_ROOT

VOC_XML = """<annotation>
  <filename>{name}.jpg</filename>
  <size><width>100</width><height>50</height><depth>3</depth></size>
  {objects}
</annotation>"""
VOC_OBJECT = """<object><name>{label}</name><difficult>0</difficult>
  <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""


def write_voc(folder, name, boxes):
    objects = ''.join(
        VOC_OBJECT.format(label=label, x1=x1, y1=y1, x2=x2, y2=y2)
        for label, x1, y1, x2, y2 in boxes
    )
    (folder / f'{name}.xml').write_text(VOC_XML.format(name=name, objects=objects))


def test_real_bccd_image_converts_to_coco_boxes(tmp_path):
    out_file = tmp_path / 'one.json'
    stats = convert_voc_to_coco(
        f'{BCCD_VOC_ROOT}/Annotations', ['BloodImage_00000'], BCCD_CLASSES, str(out_file)
    )
    coco = json.loads(out_file.read_text())
    assert stats.images == 1
    assert stats.boxes == len(coco['annotations']) == 20  # 1 WBC and 19 RBC
    assert coco['images'][0] == dict(id=0, file_name='BloodImage_00000.jpg', width=640, height=480)
    # The first object is the WBC at VOC corners (260, 177, 491, 376).
    assert coco['annotations'][0]['category_id'] == 1
    assert coco['annotations'][0]['bbox'] == [259.0, 176.0, 232.0, 200.0]
    assert [c['name'] for c in coco['categories']] == list(BCCD_CLASSES)


def test_boxes_past_the_border_are_clipped_and_counted(tmp_path):
    write_voc(
        tmp_path,
        'img',
        [
            ('RBC', 10, 10, 20, 20),  # inside
            ('WBC', -5, 40, 30, 60),  # past the left and bottom edges
            ('RBC', 90, 1, 130, 30),  # past the right edge
            ('Platelets', 50, 20, 50, 25),  # xmin == xmax: a 1-pixel sliver, dropped
            ('RBC', 120, 10, 140, 30),  # entirely outside: nothing left after clipping
        ],
    )
    out_file = tmp_path / 'out.json'
    stats = convert_voc_to_coco(str(tmp_path), ['img'], BCCD_CLASSES, str(out_file))
    assert stats.clipped_boxes == 3
    assert stats.dropped_boxes == 2
    assert stats.boxes == 3
    boxes = [a['bbox'] for a in json.loads(out_file.read_text())['annotations']]
    assert boxes == [[9.0, 9.0, 11.0, 11.0], [0.0, 39.0, 30.0, 11.0], [89.0, 0.0, 11.0, 30.0]]


def test_unknown_class_is_reported(tmp_path):
    write_voc(tmp_path, 'img', [('Neutrophil', 10, 10, 20, 20)])
    with pytest.raises(ValueError, match="class 'Neutrophil' is not in the class list"):
        convert_voc_to_coco(str(tmp_path), ['img'], BCCD_CLASSES)


def test_missing_annotation_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.xml'):
        convert_voc_to_coco(str(tmp_path), ['nothing'], BCCD_CLASSES)
