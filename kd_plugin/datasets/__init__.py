from .voc_to_coco import ConversionStats, convert_voc_to_coco, read_image_set

__all__ = ['ConversionStats', 'convert_voc_to_coco', 'read_image_set']
