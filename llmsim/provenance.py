"""Provenance of llmsim's result files: which llmsim wrote them, from which source, with what inputs.

`provenance(hardware_fidelity, seed)` is the block that `summary.json` (llmsim run) and
`sweep.json` (llmsim sweep) record under the key `provenance`:

- `llmsim_version`: the package version (`llmsim.__version__`);
- `git_commit`: the commit of the llmsim checkout that ran, from `git rev-parse HEAD` run in the
  package's folder; None when llmsim is not a git checkout of its own (an installed wheel, or a
  copy inside another project's repository), git is missing, or git does not answer within
  `GIT_TIMEOUT_S`. Finding it never fails a run;
- `hardware_fidelity`: the hardware profile's `calibration.fidelity` (`measured`, `analytic`,
  `coarse-cpu`): how far to trust the step times;
- `seed`: the scenario seed after `--seed` and `--set` (a sweep adds `seeds`, every seed it ran).

Units: the timeout in seconds.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path
from typing import Any

GIT_TIMEOUT_S = 2.0  # longest wait for git; a slow or hung git costs at most this, once per process
PACKAGE_DIR = Path(__file__).resolve().parent
_COMMIT = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # SHA-1 or SHA-256 object names


@functools.lru_cache(maxsize=None)
def git_commit(package_dir: Path = PACKAGE_DIR) -> str | None:
    """The commit checked out where `package_dir` lives, or None (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # no GIT_DIR pointing elsewhere
    try:
        done = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=package_dir, env=env,
                              capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    answer = done.stdout.split()
    if done.returncode != 0 or len(answer) != 2 or not _COMMIT.fullmatch(answer[1]):
        return None
    try:
        own_checkout = Path(answer[0]).resolve() == Path(package_dir).resolve().parent
    except OSError:
        return None
    return answer[1] if own_checkout else None  # not another project's commit that happens to hold llmsim


def provenance(hardware_fidelity: str | None, seed: int | None) -> dict[str, Any]:
    """The `provenance` block of summary.json and sweep.json."""
    from . import __version__

    return {"llmsim_version": __version__, "git_commit": git_commit(), "hardware_fidelity": hardware_fidelity, "seed": seed}
