"""Finding and loading hardware profile files: by path, or by name in the search folders, the
repository's `hardware_profiles/` and the copy packaged in the wheel (schema in
llmsim.costmodel.profile)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llmsim.costmodel._yamlio import load_yaml_model, looks_like_path
from llmsim.costmodel.profile import PACKAGED_PROFILES_DIR, REPO_PROFILES_DIR, HardwareProfile
from llmsim.errors import unknown_name


def _profile_dirs(search_dirs: Sequence[Path]) -> list[Path]:
    return [Path(d) for d in search_dirs] + [REPO_PROFILES_DIR, PACKAGED_PROFILES_DIR]


def list_profiles(search_dirs: Sequence[Path] = ()) -> list[str]:
    """Profile names found in `search_dirs`, the repository and the packaged copy, sorted."""
    names: set[str] = set()
    for directory in _profile_dirs(search_dirs):
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.yaml"))
    return sorted(names)


def load_profile(name_or_path: str | Path, search_dirs: Sequence[Path] = ()) -> HardwareProfile:
    """A profile by path to a YAML file, or by name looked up as `<dir>/<name>.yaml`.

    Names are searched in `search_dirs` in order, then the repository's `hardware_profiles/`,
    then the copy packaged in the wheel (`llmsim/_data/hardware_profiles`).
    """
    if looks_like_path(name_or_path):
        return load_yaml_model(HardwareProfile, Path(name_or_path), "hardware profile")
    name = str(name_or_path)
    for directory in _profile_dirs(search_dirs):
        path = directory / f"{name}.yaml"
        if path.is_file():
            return load_yaml_model(HardwareProfile, path, "hardware profile")
    raise unknown_name("hardware profile", name, list_profiles(search_dirs))
