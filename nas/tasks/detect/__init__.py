"""Detection: attention placed in an ultralytics YOLO model YAML, trained by ultralytics' own trainer.

``ultra``: ultralytics imported offline and quiet; ``model``: positions, model YAMLs with attention rows
and seeded builds; ``data``: the embedded digits-on-canvases dataset in ultralytics' format;
``train``: a trial's fit through ultralytics' DetectionTrainer with the search's pruning at each epoch.
ultralytics (AGPL-3.0, the ``[yolo]`` extra) is imported only here, and only when a detection space is
used.
"""
