"""The per-run DP secret: where a DP run's noise and sampling come from.

DP noise is secret in the same way a mask is: whoever can regenerate it can
subtract it from the released model, and whoever knows which clients or
examples were sampled voids the amplification the accountant credited.  The
config seed is public (it is in report.json), so a DP run draws every random
choice that DP relies on — its noise, its Poisson sampling of examples and of
clients — from keys derived from a **per-run secret**: 32 bytes from the OS
CSPRNG (:func:`os.urandom`), kept out of report.json, report.md and the logs.

So that ``--resume`` still ends with the same adapter as an uninterrupted run,
the secret is stored beside the run's checkpoint (``dp-secret.key``, file mode
0600, created with ``O_EXCL``).  A resumed run refuses a secret file that is
missing, unreadable or readable by others (:class:`~fedpriv.errors.CheckpointError`):
a silent fresh secret would break the equality with an uninterrupted run.

Keys are derived with HMAC-SHA-256 (RFC 2104) keyed by the secret, one per
``(purpose, round, client, ...)``; see :func:`fedpriv.dp.noise.noise_seed`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fedpriv.errors import CheckpointError

SECRET_NBYTES = 32
SECRET_FILE = "dp-secret.key"
"""Name of the per-run secret inside a run's directory (beside ``checkpoint.pt``)."""


def fresh_secret() -> bytes:
    """Return a new 32-byte per-run secret from the OS CSPRNG."""
    return os.urandom(SECRET_NBYTES)


def write_secret(path: Path, secret: bytes) -> None:
    """Write ``secret`` to ``path`` with mode 0600 (replacing an older secret atomically)."""
    if len(secret) != SECRET_NBYTES:
        raise CheckpointError(f"a DP run secret is {SECRET_NBYTES} bytes, got {len(secret)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_secret(path: Path) -> bytes:
    """Read the run secret at ``path``; refuse one that is missing, unreadable or shared.

    Raises :class:`CheckpointError` saying which file is wrong and what to do.
    """
    restart = ("start the run again with --overwrite (its ε then holds for the new run), or "
               "restore the file from where the run was made")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CheckpointError(
            f"the DP run's secret '{path}' is missing, so its noise and sampling cannot be "
            f"resumed; {restart}") from None
    except OSError as err:
        raise CheckpointError(f"the DP run's secret '{path}' cannot be read ({err}); "
                              f"{restart}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CheckpointError(
            f"the DP run's secret '{path}' is readable by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); anyone who read it can remove the run's noise. "
            f"If nobody did, `chmod 600 '{path}'` and resume; otherwise {restart}")
    try:
        secret = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"the DP run's secret '{path}' cannot be read ({err}); "
                              f"{restart}") from None
    if len(secret) != SECRET_NBYTES:
        raise CheckpointError(f"the DP run's secret '{path}' holds {len(secret)} bytes, not "
                              f"{SECRET_NBYTES}: it is corrupt; {restart}")
    return secret


def run_secret(run_dir: Path, *, resume: bool) -> bytes:
    """Return the secret of the DP run in ``run_dir``: read back when resuming, else new.

    ``resume`` means a checkpoint of this run exists and will be continued; a
    fresh run gets a fresh secret, written before its first round.
    """
    path = run_dir / SECRET_FILE
    if resume:
        return read_secret(path)
    secret = fresh_secret()
    write_secret(path, secret)
    return secret


__all__ = ["SECRET_FILE", "SECRET_NBYTES", "fresh_secret", "read_secret", "run_secret",
           "write_secret"]
