"""Rule demo: generate the synthetic GK-2A-format inputs (ta2d.demo.generate_demo).

generate_demo writes demo.json (the rule's first output) last, so its existence means complete.
"""

from ta2d.demo import generate_demo
from ta2d.logsetup import log_to

with log_to(snakemake.log[0]) as log:
    summary = generate_demo(dict(snakemake.params.config), progress=True, workers=snakemake.threads)
    log.info("demo summary: %s", summary)
