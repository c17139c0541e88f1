"""The 16 AMI channels: names, kinds, native resolutions and effective wavelengths.

Effective centres are 1e4 / (effective wavenumber) for the emissive channels, the numbers KMA's
calibration uses; never the rounded global attribute ``channel_center_wavelength`` (it makes
IR105 about 1.56 K too cold, see docs/gk2a-format.md#the-rounded-wavelength-attribute).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Channel:
    name: str  # lower case, as in file names
    kind: str  # "reflective" -> rf stack, "emissive" -> bt stack
    resolution_km: float
    wavelength_um: float  # effective centre
    wavenumber_cm: float | None  # effective wavenumber (emissive channels only)
    valid_bits: int  # nominal; each file's number_of_valid_bits_per_pixel wins

    @property
    def res_code(self) -> str:
        """The resolution part of a file name: 005, 010, 020."""
        return {0.5: "005", 1.0: "010", 2.0: "020"}[self.resolution_km]

    @property
    def factor(self) -> int:
        """Native pixels per 2 km pixel along one axis."""
        return int(round(2.0 / self.resolution_km))


CHANNELS: dict[str, Channel] = {
    c.name: c
    for c in [
        Channel("vi004", "reflective", 1.0, 0.4702, None, 11),
        Channel("vi005", "reflective", 1.0, 0.5086, None, 11),
        Channel("vi006", "reflective", 0.5, 0.6394, None, 12),
        Channel("vi008", "reflective", 1.0, 0.8630, None, 13),
        Channel("nr013", "reflective", 2.0, 1.3740, None, 12),
        Channel("nr016", "reflective", 2.0, 1.6092, None, 11),
        Channel("sw038", "emissive", 2.0, 3.8275, 2612.677, 14),
        Channel("wv063", "emissive", 2.0, 6.1820, 1617.609, 12),
        Channel("wv069", "emissive", 2.0, 6.9369, 1441.575, 13),
        Channel("wv073", "emissive", 2.0, 7.3247, 1365.250, 13),
        Channel("ir087", "emissive", 2.0, 8.5841, 1164.949, 13),
        Channel("ir096", "emissive", 2.0, 9.6158, 1039.960, 13),
        Channel("ir105", "emissive", 2.0, 10.3503, 966.153, 13),
        Channel("ir112", "emissive", 2.0, 11.2144, 891.713, 13),
        Channel("ir123", "emissive", 2.0, 12.3364, 810.609, 13),
        Channel("ir133", "emissive", 2.0, 13.2698, 753.591, 13),
    ]
}

# Channel order of every output (scene, chunk x[:, 0:16]).
BT_CHANNELS: tuple[str, ...] = (
    "sw038", "wv063", "wv069", "wv073", "ir087", "ir096", "ir105", "ir112", "ir123", "ir133",
)
RF_CHANNELS: tuple[str, ...] = ("vi004", "vi005", "vi006", "vi008", "nr013", "nr016")
ALL_CHANNELS: tuple[str, ...] = BT_CHANNELS + RF_CHANNELS

# The 19 planes of a chunk's x, in order.
X_CHANNELS: tuple[str, ...] = ALL_CHANNELS + ("sza", "dem", "land_sea_mask")
N_LANDCOVER = 17  # IGBP 1..17 (17 = water); one-hot index = code - 1


def l1b_filename(channel: str, area: str, stamp: str) -> str:
    """Real GK-2A L1B name, e.g. gk2a_ami_le1b_ir105_fd020ge_201909300300.nc (stamp = YYYYMMDDhhmm UTC)."""
    return f"gk2a_ami_le1b_{channel}_{area}{CHANNELS[channel].res_code}ge_{stamp}.nc"
