"""Inputs and outputs: ``images.py`` (any image -> H x W x 3 uint8 RGB, size checks before decoding),
``sources.py`` (CLI sources -> image list, shards), ``uris.py`` (``s3://``, ``gs://``, ``file://``
... through pyarrow filesystems), ``export.py`` (COCO RLE, JSON schema, datasets, mask PNGs, atomic
writes), ``annotate.py`` (supervision drawing)."""
