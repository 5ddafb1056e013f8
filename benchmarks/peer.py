"""Run the DBOS peer workload in an isolated virtualenv.

The peer script lives outside this repository (``<repo>/../shared/peers/dbos_publication.py``,
or ``$GOVKERNEL_PEERS_DIR/dbos_publication.py``) and is executed as-is, never imported. Its
dependencies (DBOS, SQLAlchemy) are installed into ``<root>/.peer-venv`` so they never become
dependencies of govkernel itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DBOS_REQUIREMENT",
    "PEER_SCRIPT_NAME",
    "PeerResult",
    "ensure_peer_venv",
    "peer_script",
    "run_peer",
]

DBOS_REQUIREMENT = "dbos==3.4.*"
PEER_SCRIPT_NAME = "dbos_publication.py"
PEERS_DIR_ENV = "GOVKERNEL_PEERS_DIR"
VENV_DIRNAME = ".peer-venv"
_MARKER_NAME = ".govkernel-peer-ok"
_REPO_ROOT = Path(__file__).resolve().parent.parent
_DEFAULT_TIMEOUT_S = 900.0
_INSTALL_TIMEOUT_S = 1800.0
_STDERR_TAIL_LINES = 30
_RESULT_RE = re.compile(
    r"^peer=(?P<peer>\S+) workflows=(?P<workflows>\d+) "
    r"seconds=(?P<seconds>[0-9.]+) workflows_per_s=(?P<rate>[0-9.]+)$"
)


@dataclass(frozen=True, slots=True)
class PeerResult:
    """One measured run of the peer workload."""

    workflows: int
    seconds: float
    workflows_per_s: float


def _venv_python(venv: Path) -> Path:
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def _clean_env() -> dict[str, str]:
    """Environment for child interpreters: no leakage of our own venv or import paths."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(key, None)
    return env


def _tail(text: str, lines: int = _STDERR_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _dbos_importable(python: Path) -> bool:
    probe = subprocess.run(
        [str(python), "-c", "import dbos, sqlalchemy"],
        capture_output=True,
        env=_clean_env(),
        timeout=120,
        check=False,
    )
    return probe.returncode == 0


def _run_checked(cmd: list[str], what: str, timeout: float) -> None:
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=_clean_env(), timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{what} timed out after {timeout:.0f}s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- stderr (tail) ---\n{_tail(proc.stderr or proc.stdout)}"
        )


def ensure_peer_venv(root: Path) -> Path:
    """Create ``root/.peer-venv`` with DBOS installed if needed; return its python.

    Idempotent: once DBOS has been verified importable, a marker file recording the requirement
    is written, and later calls return immediately without spawning any process.
    """
    venv = Path(root).resolve() / VENV_DIRNAME
    python = _venv_python(venv)
    marker = venv / _MARKER_NAME
    if python.exists() and marker.is_file() and marker.read_text().strip() == DBOS_REQUIREMENT:
        return python

    if not python.exists():
        print(f"[peer] creating virtualenv {venv} ...", file=sys.stderr, flush=True)
        _run_checked([sys.executable, "-m", "venv", str(venv)], "venv creation", 300)

    if not _dbos_importable(python):
        print(
            f"[peer] installing '{DBOS_REQUIREMENT}' into {venv} (one-off) ...",
            file=sys.stderr,
            flush=True,
        )
        _run_checked(
            [str(python), "-m", "pip", "install", "--quiet", DBOS_REQUIREMENT],
            "pip install",
            _INSTALL_TIMEOUT_S,
        )
        if not _dbos_importable(python):
            raise RuntimeError(f"dbos still not importable in {venv} after pip install")

    marker.write_text(DBOS_REQUIREMENT + "\n")
    return python


def peer_script(repo_root: Path | None = None) -> Path:
    """Locate ``dbos_publication.py``: in ``$GOVKERNEL_PEERS_DIR`` when it is set (said
    outright, it wins), else in ``<repo>/../shared/peers``."""
    peers_dir = os.environ.get(PEERS_DIR_ENV)
    if peers_dir:
        given = Path(peers_dir) / PEER_SCRIPT_NAME
        if given.is_file():
            return given
        raise FileNotFoundError(
            f"peer script {PEER_SCRIPT_NAME} not found in ${PEERS_DIR_ENV}={peers_dir}"
        )
    root = _REPO_ROOT if repo_root is None else Path(repo_root)
    candidate = root.parent / "shared" / "peers" / PEER_SCRIPT_NAME
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"peer script {PEER_SCRIPT_NAME} not found at {candidate}; set ${PEERS_DIR_ENV}"
    )


def _parse(stdout: str) -> PeerResult | None:
    for line in reversed(stdout.splitlines()):
        match = _RESULT_RE.match(line.strip())
        if match is not None:
            return PeerResult(
                workflows=int(match["workflows"]),
                seconds=float(match["seconds"]),
                workflows_per_s=float(match["rate"]),
            )
    return None


def run_peer(
    n: int,
    workdir: Path,
    python: Path,
    *,
    timeout: float = _DEFAULT_TIMEOUT_S,
    script: Path | None = None,
) -> PeerResult:
    """Run ``python dbos_publication.py n workdir`` and parse its result line."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    script_path = peer_script() if script is None else Path(script)
    cmd = [str(python), str(script_path), str(n), str(workdir)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=_clean_env(), timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raw = exc.stderr
        stderr = raw.decode(errors="replace") if isinstance(raw, bytes) else (raw or "")
        raise RuntimeError(
            f"peer run timed out after {timeout:.0f}s: {' '.join(cmd)}\n"
            f"--- stderr (tail) ---\n{_tail(stderr)}"
        ) from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"peer run failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- stderr (tail) ---\n{_tail(proc.stderr)}"
        )
    result = _parse(proc.stdout)
    if result is None:
        raise RuntimeError(
            f"peer output had no result line: {' '.join(cmd)}\n"
            f"--- stdout (tail) ---\n{_tail(proc.stdout)}\n"
            f"--- stderr (tail) ---\n{_tail(proc.stderr)}"
        )
    return result
