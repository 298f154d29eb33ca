"""Open-vocabulary detectors: text prompt + image -> boxes with one class each from the prompt.

Read in this order: ``base.py`` (what the pipeline needs from any detector: ``OpenVocabularyDetector``,
``RawDetections``), ``registry.py`` (a ``detector`` config value -> its builder, by ``config.json``
``model_type`` or file type), ``prompt.py`` (prompt -> classes -> captions with per-token class ids),
``preprocess.py`` (image -> normalised tensor), ``loading.py`` (local folder or Hub id, offline
policy), ``grounding_dino.py`` (the transformers Grounding DINO family: raw per-query boxes and
per-class scores), ``mm_grounding_dino.py`` (MM-Grounding-DINO and LLMDet), ``idea_format.py``,
``idea_architecture.py`` and ``idea_loading.py`` (IDEA-Research ``.pth`` checkpoints: key map,
architecture from shapes, strict loader), ``scoring.py`` (thresholds, one class per box, NMS, cap ->
``sv.Detections``), ``fast_path.py`` and ``fast_feed_forward.py`` (exact faster re-formulations swapped
into transformers' model), ``tiny.py`` (an untrained tiny detector for tests and offline demos),
``sam3.py`` (SAM 3: text and exemplar boxes -> boxes, scores and masks; vision features cached per
image), ``roi_align.py`` (its exemplar pooling without torchvision), ``tiny_sam3.py`` (an untrained
tiny SAM 3 for tests).
"""
