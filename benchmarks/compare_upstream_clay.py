"""ta2d's Clay encoder against upstream Clay's, for the same weights and inputs: max |token difference|.

Needs a checkout of github.com/Clay-foundation/model (not shipped with ta2d) and einops:

    .venv/bin/pip install einops
    .venv/bin/python benchmarks/compare_upstream_clay.py --upstream /path/to/Clay-foundation/model [--preset tiny]

Upstream's ``claymodel.model`` imports timm and torchvision at module level for its teacher and data
augmentation only; where they are missing (torchvision does not import beside the project's torch
wheel), empty stand-ins are registered so that the Encoder, which uses neither, can be imported.
The weights are ta2d's (seeded random init, or --ckpt clay-v1.5.ckpt with --preset large), copied
strictly into upstream's Encoder; tokens are compared at 8x8, 16x16 and 32x32 inputs (1, 4, 16 patch
tokens + cls), fp32, CPU. Prints one line per size.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

from ta2d.models.clay import PRESETS, ClayEncoder, load_clay_checkpoint


def import_upstream(root: Path):
    if importlib.util.find_spec("timm") is None:
        sys.modules["timm"] = types.ModuleType("timm")
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.v2"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision.transforms"].v2 = sys.modules["torchvision.transforms.v2"]
    sys.path.insert(0, str(root))
    from claymodel.model import Encoder

    return Encoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="checkout of Clay-foundation/model")
    ap.add_argument("--preset", default="tiny", choices=list(PRESETS))
    ap.add_argument("--ckpt", default=None, help="clay-v1.5.ckpt (with --preset large)")
    ap.add_argument("--batch", type=int, default=3)
    a = ap.parse_args()
    Encoder = import_upstream(Path(a.upstream))

    torch.manual_seed(0)
    ours = ClayEncoder.from_preset(a.preset)
    if a.ckpt:
        load_clay_checkpoint(ours, a.ckpt)
    ours = ours.float().eval()
    p = PRESETS[a.preset]
    theirs = Encoder(mask_ratio=0.0, patch_size=8, shuffle=False, dim=p["dim"], depth=p["depth"],
                     heads=p["heads"], dim_head=p["dim_head"], mlp_ratio=p["mlp_ratio"]).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)

    g = torch.Generator().manual_seed(1)
    waves = torch.tensor([3.83, 6.21, 6.94, 7.33, 8.59, 9.62, 10.35, 11.23, 12.36, 13.29,
                          0.47, 0.51, 0.64, 0.86, 1.38, 1.61])
    for side in (8, 16, 32):
        pixels = torch.randn(a.batch, len(waves), side, side, generator=g)
        time = torch.randn(a.batch, 4, generator=g)
        latlon = torch.randn(a.batch, 4, generator=g)
        gsd = torch.tensor(2000.0 * 9 / side)
        with torch.no_grad():
            mine = ours(pixels, time, latlon, gsd, waves)
            up = theirs({"pixels": pixels, "time": time, "latlon": latlon, "gsd": gsd, "waves": waves})[0]
        diff = float((mine - up).abs().max())
        print(f"{a.preset} {side}x{side}: {tuple(mine.shape)} tokens, max |ta2d - upstream| = {diff:.2e}, "
              f"max |token| = {float(up.abs().max()):.2f}")


if __name__ == "__main__":
    main()
