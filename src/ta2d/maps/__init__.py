"""TA maps as a product: hourly TA on the 2 km grid, one CF NetCDF per day and map, station-corrected.

* :mod:`ta2d.maps.plan` — which model files are mapped (``maps.model``: runs, ``best``, paths), the map targets,
  the best run from ``results/eval/metrics.csv`` and, for ``maps.unit: slot``, the slots to map now; parse time,
  no torch. Which days and slots exist is :mod:`ta2d.plan`'s.
* :mod:`ta2d.maps.dense` — the map pass at the model's speed: slot by slot, tile by tile.
* :mod:`ta2d.maps.predict` — the reference pass: one patch gathered per pixel, built like a chunk sample.
* :mod:`ta2d.maps.archive` — the CF file of a day (or a slot): CF-1.10 attributes, the GEOS grid mapping, per-slot
  status (a slot without a usable scene is NaN with its reason), compression; the jobs' entry points
  :func:`~ta2d.maps.archive.map_files` and :func:`~ta2d.maps.archive.assemble_day`.
* :mod:`ta2d.maps.observations` — label rows of a map unit as observations at station pixels.
* :mod:`ta2d.maps.kriging` — residual kriging (PyKrige, fitted variogram) and its leave-stations-out
  evaluation, ``results/eval/map_correction.{csv,md,html}``.
* :mod:`ta2d.maps.uncertainty` — the model file's error model at every pixel and slot: ``TA_standard_error``
  (the station-corrected one combines it with the kriging variance, :mod:`ta2d.maps.kriging`).
* :mod:`ta2d.maps.plots` — a PNG per slot and a GIF per day, and one slot's standard errors.

Nothing here imports the training loop (models come from model files, ``ta2d.models.model_file``), and only
:mod:`ta2d.maps.dense` and :mod:`ta2d.maps.predict` import torch at module level.
"""
