"""Rule demo: generate the synthetic GK-2A-format inputs (ta2d.demo.generate_demo)."""

import json

from ta2d.atomic import atomic_path
from ta2d.demo import generate_demo
from ta2d.logsetup import log_to

with log_to(snakemake.log[0]) as log:
    summary = generate_demo(dict(snakemake.params.config), progress=True)
    log.info("demo summary: %s", summary)
    # written last: its existence means the whole demo archive is complete
    with atomic_path(snakemake.output.manifest) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
