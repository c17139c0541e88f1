"""Reject reasons: every label row that does not become a sample gets exactly one of these."""

REJECT_COLUMNS = ["row", "stn", "time", "reason", "detail"]

REASONS = {
    # label reader (ta2d.index.labels)
    "unparseable_row": "a time, station or TA field that cannot be parsed, or a wrong field count",
    "missing_ta": "TA empty, a missing-value code (<= -90) or QC flag 9",
    "qc_flag": "TA flagged as erroneous by KMA QC",
    "implausible_ta": "TA outside [-50, 50] degC",
    "duplicate_row": "same station and time as an earlier row (the first one is kept)",
    "unknown_station": "no station-table row for this station at this time",
    # build_index
    "outside_period": "observation time outside the configured period",
    "off_disk": "station not visible from GK-2A",
    "out_of_domain": "the station's patch does not lie inside the configured domain",
    "invalid_landcover": "land cover of the station pixel is not IGBP 1..17 (e.g. 255 fill)",
    "no_scene": "no satellite slot (or no files at all) for the observation time",
    "bad_scene": "the slot's files are incomplete or unreadable (detail: the scene status)",
    # build_patch_chunk
    "nan_in_patch": "a quality-flagged / missing pixel inside the patch",
    "no_background": "inputs.background is set but has no value at the pixel and time (detail: why, e.g. an hour "
                     "missing from the t2m files)",
}
