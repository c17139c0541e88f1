"""Logging for rule scripts: everything, including an uncaught error, goes to the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import warnings


@contextlib.contextmanager
def log_to(path: str):
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    try:
        yield logging.getLogger("ta2d")
    except BaseException:
        logging.getLogger("ta2d").exception("failed")
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
