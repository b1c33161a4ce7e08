"""File formats shared by several tasks: COCO instances JSON and the PASCAL VOC folder layout."""
