"""Trained runs -> test-split metrics per validation scheme, tables and plots (rule evaluate).

evaluate.evaluate_runs runs the whole job on the other modules: samples (the per-sample table and predictions),
schemes, metrics, tables, report (metrics.md/.html) and plots. Nothing is imported here, so that
ta2d.evaluation.schemes stays free of torch for its callers (ta2d.maps.plan).
"""
