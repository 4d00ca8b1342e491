"""TFDS-convention dataset folders, one per format: ``<name>/<name>_dataset_builder.py``.

Each defines ``Builder``, :class:`movenerf.data.tfds.builders.MultiViewBuilder` bound to
its format; formats, layouts and options: ``movenerf/data/tfds/README.md``.
"""
