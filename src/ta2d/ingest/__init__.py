"""Raw archive -> calibrated scenes (rules inventory, calibrate): the AMI L1B reader, calibration,
scene files and the per-period inventories."""
