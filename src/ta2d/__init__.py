"""ta2d: GK-2A AMI + station air temperature -> patch chunks -> TA regression."""

__version__ = "0.1.0"
