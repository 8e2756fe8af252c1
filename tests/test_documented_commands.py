"""Every `llmsim ...` command shown in a fenced code block of README.md and docs/*.md runs.

How the commands are found: each Markdown file is parsed for fenced code blocks (``` or ~~~) whose
info string is empty or a shell (bash, sh, shell, console, zsh). Inside a block, lines ending in
`\\` are joined with the next, a leading `$ ` prompt is dropped, `#` comments are removed, and the
line is split into commands at `&&`, `||`, `;` and `|`. A command whose first word (after any
`NAME=value` environment assignments) is `llmsim` is a documented command, named by its file and
line. A command that mentions `llmsim` anywhere else (`time llmsim ...`, `xargs llmsim`) is an
error: the test cannot run it as written, so it fails instead of silently dropping it.

What is skipped, and why (each shows up as a skipped test with its reason):
- fresh-machine set-up lines (`python3 -m venv ...`, `pip install ...`): they create a virtual
  environment and install from a package index (network); this test runs in the environment
  that is already installed;
- `llmsim calibrate-hardware` without `--device cpu`: it measures the CUDA GPU torch sees. Where
  it has `--out FILE`, the file is replaced, for the documented commands that follow it, by a
  copy of the shipped h100-80g-sxm profile renamed to the file's stem;
- `--executor dask://HOST:PORT` with a remote HOST: it needs a running Dask cluster (network).

How each command runs: through the `llmsim` entry point of this interpreter's environment (or
`python -m llmsim` where there is none), in a scratch working directory per Markdown file that
holds copies of `scenarios/` and `hardware_profiles/` and a link to `traces/`. The commands of one
file run in document order in its directory, as a reader would type them, so a command that
reads what an earlier one wrote (`llmsim plot results/...`) finds it, and one that would clash
with an earlier one's output fails as it would for the reader. To use every core, a file's
commands are split into groups that share no path (`groups`): each group runs in order in its own
copy, groups side by side; a group that starts with the same command as an earlier group (README
repeats examples of docs/sweeps.md) reuses that run and its files. Running one test alone first
runs the commands it depends on. An absolute `/tmp/...` path is moved under the scratch
directory; any other absolute path is an error.

Sizes: only options the command accepts, so each takes seconds:
- `run`, `sweep`, `capacity`, `compare`: `--set workload.num_requests=SMALL_REQUESTS` (a
  documented `num_requests` override is lowered to it);
- `sweep`, `capacity`, `compare` without `--executor`: `--executor local:1` (no process pool to
  start; every executor gives the same numbers, tests/test_sweep.py checks that);
- `sweep`: one seed, and `--loads` cut to its first and last value (`1:8:1` -> `1:8:7`);
- `capacity`: one seed, and `--rel-tol 0.25` unless one is given.
(Several seeds, their intervals and every executor are tested in tests/test_sweep.py.)

Checks: exit status 0, and the files the command says it writes exist (and, for `llmsim plot`,
were written by it). Commands that fail because of a known code bug are marked
`xfail(strict=True)` in KNOWN_BUGS, so fixing the bug turns them into failures until the mark is
removed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_INFO = {"", "bash", "sh", "shell", "console", "zsh"}
SMALL_REQUESTS = 40
MAX_SEEDS = 1  # several seeds and their bands: tests/test_sweep.py
CAPACITY_REL_TOL = "0.25"
COMMAND_TIMEOUT_S = 180

SETUP_REASON = ("fresh-machine set-up: creates a virtual environment and installs from a package index "
                "(network); the tests run in the environment already installed")
GPU_REASON = "needs a CUDA GPU: calibrate-hardware measures the GPU torch sees (default --device cuda)"
NETWORK_REASON = "needs network: a running Dask scheduler at {host}"

# Documented commands that fail because of a bug in code this test does not own:
# (file relative to the repository, text the command contains) -> the bug.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


# ----------------------------------------------------------------------------- extraction
@dataclass(frozen=True)
class DocCommand:
    source: str  # file, relative to the repository root
    line: int  # first physical line of the command
    text: str  # the command as documented (continuations joined, comment removed)
    argv: tuple[str, ...]  # words after `llmsim`; empty for a set-up line
    env: tuple[tuple[str, str], ...] = ()
    skip: str | None = None
    problem: str | None = None  # the line mentions llmsim but cannot be run as written

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}: {self.text}"


_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^\s`]*)")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = {"&&", "||", ";", "|", "&"}


def fenced_blocks(text: str):
    """(info string, [(line number, line), ...]) of every fenced code block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(2), m.group(3).lower()
        body = []
        i += 1
        while i < len(lines) and not re.match(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1  # the closing fence (or the end of the file: an unclosed block runs to it)
        yield info, body


def logical_lines(body):
    """Join `\\` continuations: (first line number, joined text)."""
    start, parts = None, []
    for number, line in body:
        if start is None:
            start = number
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            parts.append(stripped[:-1])
            continue
        parts.append(stripped)
        yield start, " ".join(p.strip() for p in parts)
        start, parts = None, []
    if parts:
        yield start, " ".join(p.strip() for p in parts)


def split_commands(text: str) -> list[list[str]]:
    """Words of each command of a shell line, split at && || ; | &, comments removed."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    commands: list[list[str]] = [[]]
    for word in lex:
        if word in _SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def _is_setup(words: list[str]) -> bool:
    joined = " ".join(words)
    return "-m venv" in joined or re.search(r"\bpip3? install\b", joined) is not None


def _skip_reason(argv: list[str]) -> str | None:
    if argv and argv[0] == "calibrate-hardware" and option(argv, "--device") != "cpu":
        return GPU_REASON
    executor = option(argv, "--executor")
    if executor and executor.startswith("dask://") and not executor.startswith("dask://local"):
        return NETWORK_REASON.format(host=executor[len("dask://"):])
    return None


def extract(path: Path) -> list[DocCommand]:
    rel = str(path.relative_to(ROOT))
    found: list[DocCommand] = []
    for info, body in fenced_blocks(path.read_text(encoding="utf-8")):
        if info not in SHELL_INFO:
            continue
        for number, text in logical_lines(body):
            text = re.sub(r"^\$\s+", "", text.strip())
            if not text or text.startswith("#"):
                continue
            try:
                commands = split_commands(text)
            except ValueError as e:  # unbalanced quotes
                if re.search(r"\bllmsim\b", text):
                    found.append(DocCommand(rel, number, text, (), problem=f"cannot parse the shell line: {e}"))
                continue
            if any(_is_setup(words) for words in commands):
                found.append(DocCommand(rel, number, text, (), skip=SETUP_REASON))
                continue
            for words in commands:
                env = []
                while words and _ENV.match(words[0]):
                    name, _, value = words.pop(0).partition("=")
                    env.append((name, value))
                shown = " ".join(shlex.quote(w) for w in words)
                if words and words[0] == "llmsim":
                    argv = words[1:]
                    found.append(DocCommand(rel, number, shown, tuple(argv), tuple(env), skip=_skip_reason(argv)))
                elif "llmsim" in words:
                    found.append(DocCommand(rel, number, shown, (), problem="llmsim is not the command's first word: the test cannot run it as written"))
    return found


def all_commands() -> list[DocCommand]:
    return [c for path in DOC_FILES for c in extract(path)]



# ----------------------------------------------------------------------------- options
def _find(argv, name: str) -> int | None:
    for i, word in enumerate(argv):
        if word == name or word.startswith(name + "="):
            return i
    return None


def option(argv, name: str) -> str | None:
    """The value of `--name value` or `--name=value` (the last one given), else None."""
    value = None
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif word.startswith(name + "="):
            value = word[len(name) + 1:]
    return value


def set_option(argv: list[str], name: str, value: str) -> list[str]:
    i = _find(argv, name)
    if i is None:
        return argv + [name, value]
    argv = list(argv)
    if argv[i] == name:
        argv[i + 1] = value
    else:
        argv[i] = f"{name}={value}"
    return argv


def overrides(argv) -> list[str]:
    return [argv[i + 1] for i, w in enumerate(argv) if w == "--set" and i + 1 < len(argv)] + \
           [w[len("--set="):] for w in argv if w.startswith("--set=")]


def small_argv(argv: tuple[str, ...]) -> list[str]:
    """The command with the size options of the module docstring."""
    argv = list(argv)
    sub = argv[0] if argv else ""
    if sub in ("run", "sweep", "capacity", "compare"):
        replaced = False
        for i, word in enumerate(argv):
            for prefix in ("workload.num_requests=", "--set=workload.num_requests="):
                if word.startswith(prefix) and (prefix.startswith("--") or (i and argv[i - 1] == "--set")):
                    n = min(int(word[len(prefix):]), SMALL_REQUESTS)
                    argv[i] = f"{prefix}{n}"
                    replaced = True
        if not replaced:
            argv += ["--set", f"workload.num_requests={SMALL_REQUESTS}"]
    if sub in ("sweep", "capacity", "compare") and option(argv, "--executor") is None:
        argv += ["--executor", "local:1"]
    if sub in ("sweep", "capacity"):
        seeds = option(argv, "--seeds")
        if seeds is not None and int(seeds) > MAX_SEEDS:
            argv = set_option(argv, "--seeds", str(MAX_SEEDS))
    if sub == "sweep":
        loads = option(argv, "--loads")
        if loads is not None:
            argv = set_option(argv, "--loads", _two_loads(loads))
    if sub == "capacity" and option(argv, "--rel-tol") is None:
        argv += ["--rel-tol", CAPACITY_REL_TOL]
    return argv


def _two_loads(spec: str) -> str:
    if ":" in spec:
        start, stop, _step = spec.split(":")
        span = float(stop) - float(start)
        return spec if span <= 0 else f"{start}:{stop}:{_num(span)}"
    values = spec.split(",")
    return ",".join(dict.fromkeys([values[0], values[-1]]))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


# ----------------------------------------------------------------------------- expected outputs
def _scenario_data(workdir: Path, argv) -> dict:
    path = workdir / argv[1] if (workdir / argv[1]).is_file() else ROOT / argv[1]
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return data if isinstance(data, dict) else {}


def _override(argv, key: str):
    value = None
    for text in overrides(argv):
        k, _, v = text.partition("=")
        if k.strip() == key:
            value = yaml.safe_load(v)
    return value


def expected_outputs(argv, workdir: Path) -> list[Path]:
    """Files the command says it writes (its help and the docs), relative to `workdir`."""
    sub = argv[0]
    if sub == "run":
        sc = _scenario_data(workdir, argv)
        name = _override(argv, "name") or sc.get("name", "scenario")
        kind = option(argv, "--scheduler") or _override(argv, "scheduler.kind") or (sc.get("scheduler") or {}).get("kind", "past-future")
        seed = option(argv, "--seed") or _override(argv, "seed") or sc.get("seed", 0)
        out = Path(option(argv, "--out") or f"results/{name}-{kind}-seed{seed}")
        files = ["requests.csv", "summary.json", "scenario.yaml"]
        if "--steps" in argv or _override(argv, "engine.record_steps") is True:
            files.append("steps.csv")
        return [out / f for f in files]
    if sub == "sweep":
        name = _override(argv, "name") or _scenario_data(workdir, argv).get("name", "scenario")
        out = Path(option(argv, "--out") or f"results/sweep-{name}")
        files = ["sweep.parquet", "sweep.csv"]
        if "--no-plots" not in argv:
            files += ["goodput.png", "sla_attainment.png", "tail_latency.png", "eviction_rate.png"]
        return [out / f for f in files]
    if sub == "capacity" and option(argv, "--out"):
        return [Path(option(argv, "--out")) / f for f in ("capacity.json", "probes.csv")]
    if sub == "compare" and option(argv, "--out"):
        return [Path(option(argv, "--out"))]
    if sub == "trace" and len(argv) > 3 and argv[1] == "convert":
        return [Path(argv[3])]
    if sub in ("calibrate-hardware", "import-profile") and option(argv, "--out"):
        return [Path(option(argv, "--out"))]
    if sub == "plot":
        folder = workdir / argv[1]
        if (folder / "sweep.parquet").exists() or (folder / "sweep.csv").exists():
            names = ["goodput.png", "sla_attainment.png", "tail_latency.png", "eviction_rate.png"]
        else:
            names = ["latency_cdf.png"] + (["timeseries.png"] if (folder / "steps.csv").exists() else [])
        return [Path(argv[1]) / n for n in names]
    return []


COMMANDS = all_commands()


# ----------------------------------------------------------------------------- running
@dataclass
class Outcome:
    argv: list[str]
    returncode: int
    output: str
    seconds: float
    started: float
    expected: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)  # plot: a figure this command did not rewrite
    prerequisite_failures: list[str] = field(default_factory=list)
    same_run_as: str | None = None  # an identical command in a fresh directory, run once for both


def _llmsim_prefix() -> list[str]:
    script = Path(sys.executable).parent / "llmsim"
    return [str(script)] if script.exists() else [sys.executable, "-m", "llmsim"]


def _sandbox(argv: list[str], workdir: Path) -> list[str]:
    out = []
    for word in argv:
        head, eq, tail = word.rpartition("=") if word.startswith("--") and "=" in word else ("", "", word)
        if tail.startswith("/tmp/"):
            moved = workdir / tail.lstrip("/")
            moved.parent.mkdir(parents=True, exist_ok=True)
            tail = str(moved)
        elif tail.startswith("/"):
            raise AssertionError(f"documented command writes or reads an absolute path outside /tmp: {tail}")
        out.append(f"{head}{eq}{tail}")
    return out


def written_paths(cmd: DocCommand) -> list[str]:
    """Where a command writes (its output folder or file), relative, as documented."""
    if cmd.problem is not None or not cmd.argv:
        return []
    argv = list(cmd.argv)
    if cmd.skip is None:
        argv = small_argv(cmd.argv)
    if argv[0] == "plot":
        return [argv[1].rstrip("/")] if len(argv) > 1 else []
    return sorted({str(p.parent) if p.suffix in (".csv", ".json", ".png", ".parquet", ".yaml") and argv[0] in ("run", "sweep", "capacity")
                   else str(p) for p in expected_outputs(argv, ROOT)})


def groups(commands: list[DocCommand]) -> dict[DocCommand, str]:
    """Commands of one file that share state: one writes where another writes or reads (a path
    or a profile name). Each group runs in document order in one scratch directory; groups are
    independent of each other."""
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i

    out: dict[DocCommand, str] = {}
    for source in dict.fromkeys(c.source for c in commands):
        chain = [c for c in commands if c.source == source]
        words = [{w for a in c.argv for w in re.split(r"[=,]", a) if w} for c in chain]
        writes = [written_paths(c) for c in chain]
        for j in range(len(chain)):
            for i in range(j):
                shared = any(
                    w == x or w.startswith(x + "/") or x.startswith(w + "/") or Path(x).stem in words[j]
                    for x in writes[i] for w in words[j] | set(writes[j])
                )
                if shared:
                    parent[find(id(chain[j]))] = find(id(chain[i]))
        for c in chain:
            out[c] = f"{source}#{chain.index(next(d for d in chain if find(id(d)) == find(id(c))))}"
    return out


class DocRunner:
    """Runs the documented commands: each group (see `groups`) in order in its own scratch
    directory, groups side by side on a thread pool (one thread per core).

    A group whose first command is the same command as the first of an earlier group (the same
    words, both in a fresh directory: README.md repeats examples of docs/sweeps.md) does not run
    it twice: once the earlier one has run, its result is shared and the files it wrote are copied
    into the later group's directory, which then goes on with its own commands."""

    def __init__(self, root: Path, selected: list[DocCommand]) -> None:
        self.root = root
        self.group = groups(COMMANDS)
        self.chains: dict[str, list[DocCommand]] = {}
        for c in COMMANDS:
            self.chains.setdefault(self.group[c], []).append(c)
        self.seed_of: dict[str, str] = {}  # group -> earlier group whose first command it shares
        firsts: dict[tuple, str] = {}
        for g, chain in self.chains.items():
            head = chain[0]
            if head.skip is not None or head.problem is not None:
                continue
            key = (head.argv, head.env)
            if key in firsts:
                self.seed_of[g] = firsts[key]
            else:
                firsts[key] = g
        self.results: dict[DocCommand, Future] = {c: Future() for c in COMMANDS}
        self._lock = threading.Lock()
        self._started: set[str] = set()
        self.selected = selected
        self.pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1))

    def workdir(self, group: str) -> Path:
        d = self.root / re.sub(r"[^A-Za-z0-9]+", "_", group)
        if not d.exists():
            d.mkdir(parents=True)
            shutil.copytree(ROOT / "scenarios", d / "scenarios")
            shutil.copytree(ROOT / "hardware_profiles", d / "hardware_profiles")
            (d / "traces").symlink_to(ROOT / "traces", target_is_directory=True)
        return d

    def outcome(self, cmd: DocCommand) -> Outcome:
        self._start(self.group[cmd])
        return self.results[cmd].result(timeout=15 * 60)  # a hung chain fails the test instead of hanging it

    def _start(self, group: str) -> None:
        with self._lock:
            if group in self._started:
                return
            self._started.add(group)
        seed = self.seed_of.get(group)
        if seed is None:
            self.pool.submit(self._chain, group)
            return
        self._start(seed)
        # runs in the thread that sets the seed's result, before that chain goes on: the copy
        # sees exactly what the shared command wrote
        self.results[self.chains[seed][0]].add_done_callback(lambda f, g=group, s=seed: self._seeded(g, s, f))

    def _seeded(self, group: str, seed: str, done: Future) -> None:
        head = self.chains[group][0]
        try:
            shared = done.result()
            src, dst = self.workdir(seed), self.workdir(group)
            for rel in written_paths(head):
                if (src / rel).is_dir():
                    shutil.copytree(src / rel, dst / rel, dirs_exist_ok=True)
                elif (src / rel).exists():
                    (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src / rel, dst / rel)
            result = None if shared is None else Outcome(**{**shared.__dict__, "same_run_as": self.chains[seed][0].id})
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.results[head].set_exception(e)
            self.pool.submit(self._chain, group, 1, [head.id])
            return
        self.results[head].set_result(result)
        failed = [head.id] if result is not None and (result.returncode != 0 or result.missing) else []
        self.pool.submit(self._chain, group, 1, failed)

    def start_selected(self) -> None:
        # the longest groups first, so that the last to finish is a short one
        order = sorted(dict.fromkeys(self.group[c] for c in self.selected), key=lambda g: -len(self.chains[g]))
        for group in order:
            self._start(group)

    def _chain(self, group: str, first: int = 0, failed: list[str] | None = None) -> None:
        """The commands of `group` from index `first` up to its last selected one, in order."""
        chain = self.chains[group]
        wanted = [i for i, c in enumerate(chain) if c in self.selected]
        last = max(wanted) if wanted else (0 if self.selected else len(chain) - 1)  # 0: only a seed
        failed = list(failed or [])
        for cmd in chain[first: last + 1]:
            try:
                result = self._run_one(cmd, self.workdir(group), failed)
            except BaseException as e:  # noqa: BLE001 - handed to the test
                self.results[cmd].set_exception(e)
                failed.append(cmd.id)
                continue
            if result is not None and (result.returncode != 0 or result.missing):
                failed.append(cmd.id)
            self.results[cmd].set_result(result)
        for cmd in chain[max(first, last + 1):]:
            self.results[cmd].set_result(None)  # not selected: never awaited

    def _run_one(self, cmd: DocCommand, workdir: Path, failed: list[str]) -> Outcome | None:
        if cmd.problem is not None:
            return None
        if cmd.skip is not None:
            self._stand_in(cmd, workdir)
            return None
        argv = _sandbox(small_argv(cmd.argv), workdir)
        expected = expected_outputs(argv, workdir)
        env = dict(os.environ, MPLBACKEND="Agg", COLUMNS="120", **dict(cmd.env))
        started = time.time()
        proc = subprocess.run([*_llmsim_prefix(), *argv], cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)
        seconds = time.time() - started
        missing = [p for p in expected if not (workdir / p).exists()]
        stale = []
        if argv[0] == "plot":
            stale = [p for p in expected if (workdir / p).exists() and (workdir / p).stat().st_mtime < started - 1]
        return Outcome(argv, proc.returncode, proc.stdout + proc.stderr, seconds, started, expected, missing, stale, list(failed))

    @staticmethod
    def _stand_in(cmd: DocCommand, workdir: Path) -> None:
        """A skipped GPU calibration's --out file, for the commands after it: a shipped profile."""
        if cmd.argv and cmd.argv[0] == "calibrate-hardware" and option(cmd.argv, "--out"):
            out = workdir / option(cmd.argv, "--out")
            out.parent.mkdir(parents=True, exist_ok=True)
            text = (ROOT / "hardware_profiles" / "h100-80g-sxm.yaml").read_text()
            out.write_text(re.sub(r"(?m)^(  name: ).*$", rf"\g<1>{out.stem}", text, count=1))


@pytest.fixture(scope="module")
def runner(request, tmp_path_factory):
    selected = [item.callspec.params["cmd"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "cmd" in item.callspec.params]
    r = DocRunner(tmp_path_factory.mktemp("documented-commands"), selected)
    r.start_selected()
    yield r
    r.pool.shutdown(wait=True, cancel_futures=True)


def _param(cmd: DocCommand):
    marks = []
    for (source, fragment), reason in KNOWN_BUGS.items():
        if cmd.source == source and fragment in cmd.text:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
    return pytest.param(cmd, id=cmd.id, marks=marks)


@pytest.mark.parametrize("cmd", [_param(c) for c in COMMANDS])
def test_documented_command(cmd: DocCommand, runner: DocRunner) -> None:
    if cmd.problem is not None:
        pytest.fail(f"{cmd.id}: {cmd.problem}")
    if cmd.skip is not None:
        pytest.skip(cmd.skip)
    out = runner.outcome(cmd)
    where = f"{cmd.id}\n  ran: llmsim {shlex.join(out.argv)}  ({out.seconds:.1f} s)"
    if out.same_run_as:
        where += f"\n  (the same command as {out.same_run_as}, run once for both)"
    if out.prerequisite_failures:
        where += "\n  earlier commands of this file that failed: " + "; ".join(out.prerequisite_failures)
    assert out.returncode == 0, f"{where}\n  exit status {out.returncode}; output:\n{out.output[-3000:]}"
    assert not out.missing, f"{where}\n  did not write {', '.join(map(str, out.missing))}; output:\n{out.output[-2000:]}"
    assert not out.stale, f"{where}\n  left {', '.join(map(str, out.stale))} unchanged"


# ----------------------------------------------------------------------------- the extraction itself
def test_commands_are_found_in_every_documented_place() -> None:
    """The parser finds the commands (a broken parser would otherwise pass with nothing to run)."""
    by_file: dict[str, int] = {}
    for c in COMMANDS:
        if c.argv:
            by_file[c.source] = by_file.get(c.source, 0) + 1
    assert by_file.get("README.md", 0) >= 10, by_file
    assert by_file.get("docs/sweeps.md", 0) >= 5, by_file
    assert by_file.get("docs/cost-model.md", 0) >= 2, by_file
    subcommands = {c.argv[0] for c in COMMANDS if c.argv}
    assert {"run", "validate", "list", "step-time", "sweep", "capacity", "compare", "plot"} <= subcommands, subcommands


def test_no_llmsim_command_outside_a_fenced_block() -> None:
    """An indented code block or a bare line starting with `llmsim ` would escape this test."""
    offenders = []
    for path in DOC_FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        fenced = {n for _, body in fenced_blocks("\n".join(lines)) for n, _ in body}
        for number, line in enumerate(lines, 1):
            if number not in fenced and re.match(r"^\s*(\$\s+)?llmsim\s+[a-z]", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "put these commands in a fenced ```bash block:\n" + "\n".join(offenders)


def test_extraction_rules() -> None:
    text = "\n".join([
        "```bash",
        "llmsim run a.yaml \\",
        "  --seed 3   # a comment",
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && llmsim run b.yaml",
        "llmsim validate c.yaml && llmsim list",
        "time llmsim list",
        "```",
        "```python",
        "llmsim run not-shell.yaml",
        "```",
    ])
    blocks = list(fenced_blocks(text))
    assert [info for info, _ in blocks] == ["bash", "python"]
    lines = list(logical_lines(blocks[0][1]))
    assert lines[0] == (2, "llmsim run a.yaml --seed 3   # a comment")
    assert split_commands(lines[0][1]) == [["llmsim", "run", "a.yaml", "--seed", "3"]]
    assert split_commands(lines[2][1]) == [["llmsim", "validate", "c.yaml"], ["llmsim", "list"]]
    assert _is_setup(split_commands(lines[1][1])[0])
    assert small_argv(("sweep", "s.yaml", "--loads", "1:8:1", "--seeds", "3")) == [
        "sweep", "s.yaml", "--loads", "1:8:7", "--seeds", "1", "--set", f"workload.num_requests={SMALL_REQUESTS}",
        "--executor", "local:1"]
    assert small_argv(("sweep", "s.yaml", "--loads", "8,16,24", "--set", "workload.num_requests=300"))[2:6] == [
        "--loads", "8,24", "--set", f"workload.num_requests={SMALL_REQUESTS}"]
    assert _skip_reason(["calibrate-hardware", "--tp", "1"]) == GPU_REASON
    assert _skip_reason(["calibrate-hardware", "--device", "cpu"]) is None
    assert _skip_reason(["sweep", "s.yaml", "--executor", "dask://host:8786"]).startswith("needs network")
    assert _skip_reason(["sweep", "s.yaml", "--executor", "dask://local"]) is None


# ----------------------------------------------------------------------------- the README's scenario example
def test_readme_scenario_example_validates(tmp_path: Path) -> None:
    """The annotated scenario in README.md ("Scenario files") is a valid scenario as written
    (its relative paths read from a file in scenarios/)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [body for info, body in fenced_blocks(text) if info == "yaml"]
    assert blocks, "README.md has no ```yaml scenario example"
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "traces").symlink_to(ROOT / "traces", target_is_directory=True)
    for i, body in enumerate(blocks):
        path = tmp_path / "scenarios" / f"readme-example-{i}.yaml"
        path.write_text("\n".join(line for _, line in body) + "\n")
        proc = subprocess.run([*_llmsim_prefix(), "validate", str(path)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)
        first = body[0][0]
        assert proc.returncode == 0, f"README.md:{first}: the scenario example does not validate:\n{proc.stdout}{proc.stderr}"
