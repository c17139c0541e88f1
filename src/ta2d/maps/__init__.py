"""TA maps as a product: hourly TA on the 2 km grid, one CF NetCDF per day and run, station-corrected.

* :mod:`ta2d.maps.plan` — what is mapped (``maps.runs``, ``maps.days``), resolved at parse time without
  torch; the ``best`` pseudo-run is resolved inside the job from ``results/eval/metrics.csv``.
* :mod:`ta2d.maps.predict` — one batched model pass over every land pixel of every slot of a day.
* :mod:`ta2d.maps.archive` — the per-day file (``results/maps/{run}/{day}.nc``): CF-1.10 attributes, the GEOS
  grid mapping, per-slot status (a slot without a usable scene is NaN with its reason), compression; the
  job's entry point :func:`~ta2d.maps.archive.map_day_files`.
* :mod:`ta2d.maps.observations` — station observations of a day (the one function that reads them).
* :mod:`ta2d.maps.kriging` — residual kriging (PyKrige, fitted variogram) and its leave-stations-out
  evaluation, ``results/eval/map_correction.{csv,md,html}``.
* :mod:`ta2d.maps.plots` — a PNG per slot and a GIF per day.

Nothing here imports the training loop (models are used through ``ta2d.training.inference`` and
``ta2d.models.load_model``), and nothing imports torch at module level except :mod:`ta2d.maps.predict`.
"""
