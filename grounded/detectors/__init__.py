"""Open-vocabulary detectors: text prompt + image -> boxes with one class each from the prompt.

Read in this order: ``prompt.py`` (prompt -> classes -> captions with per-token class ids),
``preprocess.py`` (image -> normalised tensor), ``loading.py`` (local folder or Hub id, offline
policy), ``grounding_dino.py`` (the detector: raw per-query boxes and per-class scores),
``scoring.py`` (thresholds, one class per box, NMS, cap -> ``sv.Detections``), ``fast_path.py`` and
``fast_feed_forward.py`` (exact faster re-formulations swapped into transformers' model), ``tiny.py``
(an untrained tiny detector for tests and offline demos).
"""
