"""Data: scenes on disk or generated, view sources, and the training input pipeline.

* ``formats/``: one reader per on-disk format into a ``SceneRecord``
  (:mod:`~movenerf.data.formats.record`), and the registry of formats by name.
* :mod:`~movenerf.data.procedural`: generated scenes (exact cameras, depths and masks).
* :mod:`~movenerf.data.images`: image resizing.
* :mod:`~movenerf.data.views`: random access to the views of many scenes.
* :mod:`~movenerf.data.samplers`: source views, target pixels, dataset mixtures.
* :mod:`~movenerf.data.pipeline`: training and evaluation examples, grain batches.
* :mod:`~movenerf.data.sources`: the view source of an experiment config's dataset entry.
* :mod:`~movenerf.data.sfm`: structure from motion (pycolmap) into the LLFF layout.
* :mod:`~movenerf.data.matching`: keypoints matched between photos (pycolmap's SIFT).
* :mod:`~movenerf.data.camera_check`: do a scene's cameras agree with its images, depth
  or sparse points.
* ``tfds/``: the TFDS builder, its per-format catalog and the build command.
"""
