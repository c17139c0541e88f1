"""Rule demo: generate the synthetic GK-2A-format inputs (ta2d.demo.generate_demo).

generate_demo writes demo.json (the rule's first output) last, so its existence means complete.
"""

from ta2d.demo import generate_demo
from ta2d.logsetup import log_to

# The split only sorts demo.json's observable floors per split and scheme; it is read from the config,
# not passed as a param, so that a new split does not regenerate a gigabyte of unchanged inputs
# (evaluate computes the floors of the current split from the truth file itself).
config = {**snakemake.params.config, "split": snakemake.config["split"]}
with log_to(snakemake.log[0]) as log:
    summary = generate_demo(config, progress=True, workers=snakemake.threads)
    log.info("demo summary: %s", summary)
