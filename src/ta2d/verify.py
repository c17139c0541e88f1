"""`ta2d verify DIR`: every product under a workflow folder's results/ read whole and checked against the CRCs
recorded in it when it was written (ta2d.checksums); the labelled chunks also against the chunk contract and for
samples that leak between splits (ta2d.chunks.inspect).

For every file that fails, the report names the file, what failed in it (field, tensor or variable) and the command
that rebuilds just that file. A file written before ta2d recorded checksums is listed as unchecked, not failed.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# nothing heavy at import: verify's worker processes import this module to check NetCDF files (h5py, numpy)
from ta2d.checksums import ChecksumCheck, netcdf_checksum_problems, pt_checksum_problems


@dataclass
class FileCheck:
    """One product file: its ``problems`` (damage or the contract: rebuilding it helps), ``leaks`` between splits
    (a property of the split, which rebuilding one file does not change), whether it records checksums, and the
    bytes read to check it and how long that took."""

    path: Path
    kind: str
    problems: list[str]
    recorded: bool
    bytes_read: int
    seconds: float
    leaks: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.problems or self.leaks)


@dataclass
class VerifyReport:
    results: Path
    files: list[FileCheck]
    n_samples: int  # labelled samples whose splits were checked for leaks
    seconds: float
    jobs: int = 1

    @property
    def workflow(self) -> Path:
        """The folder the Snakefile runs in: the rebuild commands name paths relative to it."""
        return self.results.parent

    @property
    def failed(self) -> list[FileCheck]:
        return [f for f in self.files if f.failed]

    @property
    def unrecorded(self) -> list[FileCheck]:
        return [f for f in self.files if not f.recorded and not f.failed]

    @property
    def bytes_read(self) -> int:
        return sum(f.bytes_read for f in self.files)


def _check_chunk(path: Path, whole_contract: bool) -> tuple[ChecksumCheck, object]:
    from ta2d.chunks.inspect import check_chunk_file

    found = check_chunk_file(path, whole_contract)
    return ChecksumCheck(found.problems, found.recorded), found.samples


def _check_pt(path: Path) -> tuple[ChecksumCheck, None]:
    try:
        return pt_checksum_problems(path), None
    except Exception as err:  # noqa: BLE001 - torch reports truncation / garbage as many kinds of error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return ChecksumCheck([f"not a readable .pt file (truncated or corrupt?): {first}"], recorded=True), None


def _check_netcdf(path: Path) -> tuple[ChecksumCheck, None]:
    try:
        return netcdf_checksum_problems(path), None
    except OSError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return ChecksumCheck([f"not a readable NetCDF/HDF5 file (truncated or corrupt?): {first}"],
                             recorded=True), None


# kind -> (globs under results/, check); chunk-like files are read whole whether or not they record CRCs
PRODUCTS: dict[str, tuple[tuple[str, ...], Callable[[Path], tuple[ChecksumCheck, object]]]] = {
    "chunks": (("patch_pt/*.pt",), lambda p: _check_chunk(p, whole_contract=True)),
    "embeddings": (("embed/*/*.pt",), lambda p: _check_chunk(p, whole_contract=False)),
    "tiles": (("unlabeled/*.pt",), lambda p: _check_chunk(p, whole_contract=False)),
    "scenes": (("scenes/*.nc",), _check_netcdf),
    "maps": (("maps/**/*.nc",), _check_netcdf),
    "models": (("models/*.pt",), _check_pt),
    "checkpoints": (("runs/*/best.pt", "runs/*/current.pt"), _check_pt),
}
_READ_WHOLE_ANYWAY = ("chunks", "embeddings", "tiles")


def results_folder(folder: str | Path) -> Path:
    """DIR/results for a workflow folder, else DIR itself (a results folder)."""
    folder = Path(folder)
    return folder / "results" if (folder / "results").is_dir() else folder


def product_files(results: str | Path) -> list[tuple[str, Path]]:
    """(kind, path) of every product file under a results folder, in PRODUCTS order."""
    results = Path(results)
    return [(kind, path) for kind, (globs, _) in PRODUCTS.items()
            for pattern in globs for path in sorted(results.glob(pattern)) if path.is_file()]


def available_cpus() -> int:
    """The CPUs this process may run on (a batch job's share, not the node's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def verify_products(folder: str | Path, split_cfg: Mapping | None = None, jobs: int = 1) -> VerifyReport:
    """Check every product under ``folder`` (a workflow folder or its results/); ``split_cfg``: also check that
    every labelled sample is in the split the config's rule gives it (ta2d.chunks.inspect.split_problems).
    ``jobs`` > 1: the NetCDF files are checked by that many worker processes while this one checks the others
    (deflated scenes are CPU-bound: one core inflates them at about a tenth of a disk's speed)."""
    from ta2d.chunks.inspect import sample_table, split_problems

    results = results_folder(folder)
    t0 = time.perf_counter()
    todo = product_files(results)
    netcdf = [item for item in todo if item[1].suffix == ".nc"]
    workers = min(jobs, len(netcdf))
    if workers > 1:
        # spawned, not forked: a fork would copy the locks this process's threads (torch's) hold, and hang on them
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending = {item: pool.submit(_check_file, item) for item in netcdf}
            done = {item: _check_file(item) for item in todo if item not in pending}
            done.update({item: future.result() for item, future in pending.items()})
        checked = [done[item] for item in todo]
    else:
        checked = [_check_file(item) for item in todo]
    files = [f for f, _ in checked]
    table = sample_table([s for _, s in checked if s is not None])
    by_path = {f.path: f for f in files}
    for path, leaks in split_problems(table, split_cfg).items():
        by_path[Path(path)].leaks.extend(leaks)
    return VerifyReport(results, files, len(table), time.perf_counter() - t0, max(1, workers))


def _check_file(item: tuple[str, Path]) -> tuple[FileCheck, object]:
    kind, path = item
    t0 = time.perf_counter()
    check, samples = PRODUCTS[kind][1](path)
    read = check.recorded or kind in _READ_WHOLE_ANYWAY
    return FileCheck(path, kind, check.problems, check.recorded, path.stat().st_size if read else 0,
                     time.perf_counter() - t0), samples


def rebuild_command(check: FileCheck, workflow: Path) -> str:
    """The command, run in the workflow folder, that rebuilds just this file (--force reruns the one job that
    writes it). A run's best.pt and its hidden .best.pt.keep are one file, and a rerun resumes from current.pt
    and relinks the keep: a damaged best.pt needs both removed first, which retrains the run."""
    rel = check.path.relative_to(workflow) if check.path.is_relative_to(workflow) else check.path
    if check.kind != "checkpoints":
        return f"snakemake --cores all --force {rel}"
    best = rel.with_name("best.pt")
    if rel.name == "current.pt":  # a damaged current.pt is not resumed from: the forced run starts over
        return f"snakemake --cores all --force {best}"
    return f"rm -f {rel.with_name('current.pt')} {rel.with_name('.best.pt.keep')} && " \
           f"snakemake --cores all --force {best}"


def report_lines(report: VerifyReport, split_rule: str) -> tuple[list[str], list[str]]:
    """(summary lines, problem lines) of a report: what `ta2d verify` prints to stdout and to stderr."""
    problems = []
    for f in report.failed:
        problems.append(f"{f.path}:")
        problems += [f"  - {p}" for p in f.problems + f.leaks]
        if f.problems:
            problems.append(f"  rebuild just this file: {rebuild_command(f, report.workflow)}")
    if any(f.problems for f in report.failed):
        problems.append(f"(run the rebuild commands in {report.workflow}, with the --configfile options the tree was "
                        "built with; each reruns only the job that writes that file)")
    n, gb = len(report.files), report.bytes_read / 1e9
    lines = [f"{n} files read under {report.results}: {len(report.failed)} with problems; splits of "
             f"{report.n_samples} labelled samples checked for leaks ({split_rule})"]
    kinds = {kind: [f for f in report.files if f.kind == kind] for kind in PRODUCTS}
    counted = [f"{len(fs)} {kind} ({sum(f.bytes_read for f in fs) / 1e9:.3f} GB)" for kind, fs in kinds.items() if fs]
    if counted:
        lines.append("checked: " + ", ".join(counted))
    unrecorded = report.unrecorded
    if unrecorded:
        shown = ", ".join(str(f.path.relative_to(report.results)) for f in unrecorded[:10])
        more = f" and {len(unrecorded) - 10} more" if len(unrecorded) > 10 else ""
        lines.append(f"{len(unrecorded)} files with no checksums recorded (written before ta2d recorded them: their "
                     f"bytes not checked, not failed): {shown}{more}")
    jobs = f"NetCDF files by {report.jobs} processes" if report.jobs > 1 else "1 process"
    lines.append(f"{gb:.3f} GB read and checked in {report.seconds:.2f} s ({gb / max(report.seconds, 1e-9):.2f} GB/s, "
                 f"{jobs})")
    return lines, problems
