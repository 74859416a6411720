"""One error hierarchy for tritonkit.

Every error a user can cause or meet carries a one-line ``message`` (what went wrong) and a
``hint`` (what to do). The CLI prints both and exits with the class's ``exit_code``; it never
shows a traceback for these. Library messages speak of arguments and settings, never of CLI
flags: the CLI owns its flag names.

::

    TritonkitError            exit 1   (base; also any unexpected failure)
    ├── SpecError             exit 9   bad spec or a file it names: names the file, the key path and a fix
    ├── UsageError            exit 10  a bad argument value: an unknown release or environment, a conflict
    ├── BuildError            exit 3   a build step failed: names the model and the step
    ├── VerifyError           exit 4   a repository does not match its lock or schema
    ├── ServerError           exit 5   Triton failed to start, was unreachable, or a model failed to load
    ├── RegistryError         exit 11  an OCI registry refused, was unreachable, or served bad content
    ├── ClusterError          exit 12  the Kubernetes API refused, or was unreachable
    ├── DependencyError       exit 6   an optional extra is not installed
    ├── TuneError             exit 7   no setting meets the latency budget
    ├── PromoteError          exit 8   a promotion failed; the previous release still serves
    ├── NotConfirmed          exit 13  nothing was written because the change was not confirmed
    ├── StorageError          exit 14  the disk is full, read-only, or a path is not writable
    ├── SloViolation          exit 15  live metrics break a model's SLO (tritonkit check)
    ├── TrustError            exit 16  a release is unsigned or not signed by a trusted key
    └── Inconclusive          exit 17  too little traffic in the window to judge an SLO (tritonkit check)

Exit 2 is left to click's own usage errors (an unknown flag, a missing argument) and 130 to
Ctrl-C. The README's "Exit codes" table is this tree.

Example:
    >>> raise SpecError("models[0].max_batch_size: must be >= 0", file="tritonkit.yaml",
    ...                 hint="set max_batch_size: 0 for models without a batch dimension")
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path


class TritonkitError(Exception):
    """Base class: a foreseeable failure with a one-line message and a hint."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class SpecError(TritonkitError):
    """The spec (or a file it names) is invalid. Nothing has been written."""

    exit_code = 9

    def __init__(self, message: str, *, file: str | Path | None = None, key: str = "", hint: str = "") -> None:
        where = str(file) if file is not None else ""
        if key:
            where = f"{where}: {key}" if where else key
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.file = file
        self.key = key
        self.detail = message


class UsageError(TritonkitError):
    """An argument's value is wrong (an unknown release, environment or model; settings that
    conflict). Nothing has been done."""

    exit_code = 10


class BuildError(TritonkitError):
    """A build step failed for one model; ``workdir`` is kept to reproduce it."""

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        model: str,
        step: str,
        hint: str = "",
        workdir: Path | None = None,
    ) -> None:
        super().__init__(f"model '{model}', step '{step}': {message}", hint=hint)
        self.model = model
        self.step = step
        self.workdir = workdir


class VerifyError(TritonkitError):
    """A repository cannot be verified at all (for example, its lock file is missing)."""

    exit_code = 4


class ServerError(TritonkitError):
    """Triton could not be started, reached, or could not load a model."""

    exit_code = 5


class RegistryError(TritonkitError):
    """An OCI registry could not be reached, refused a request, or served content whose digest
    does not match."""

    exit_code = 11


class ClusterError(TritonkitError):
    """The Kubernetes API could not be reached or refused a request."""

    exit_code = 12


class DependencyError(TritonkitError):
    """An optional dependency is missing; the hint names the extra to install."""

    exit_code = 6


class TuneError(TritonkitError):
    """``tritonkit tune`` found nothing that meets the asked latency budget."""

    exit_code = 7


class PromoteError(TritonkitError):
    """A promotion failed and was undone: the previous release still serves, state unchanged."""

    exit_code = 8


class NotConfirmed(TritonkitError):
    """A change was shown but not confirmed (no terminal to ask, or the answer was no); nothing
    was written."""

    exit_code = 13


class StorageError(TritonkitError):
    """The filesystem refused a write: no space left, read-only, or permission denied. The
    command's own clean-up has run (staging and working directories are removed)."""

    exit_code = 14

    _REASONS = {
        errno.ENOSPC: ("no space left on the device", "free space there (or write elsewhere), then run again"),
        errno.EDQUOT: ("disk quota exceeded", "free space within the quota (or write elsewhere), then run again"),
        errno.EROFS: ("read-only file system", "write to a writable location"),
        errno.EACCES: ("permission denied", "check the owner and mode of that path, or write elsewhere"),
        errno.EPERM: ("operation not permitted", "check the owner and mode of that path, or write elsewhere"),
    }

    @classmethod
    def from_os_error(cls, exc: OSError) -> StorageError | None:
        """The StorageError for a full, read-only or forbidden filesystem; None for any other OSError.

        The path named is where the write failed: a copy's destination (``filename2``), not its
        source; for ``shutil.copytree``'s collected errors (``shutil.Error``, whose causes are
        strings), the first failed copy's destination and the errno in its message.
        """
        code, path = exc.errno, exc.filename2 or exc.filename
        if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
            for entry in exc.args[0]:
                found = re.search(r"\[Errno (\d+)\]", str(entry[-1])) if isinstance(entry, tuple) else None
                if found:
                    code, path = int(found.group(1)), entry[1] if len(entry) == 3 else None
                    break
        if code not in cls._REASONS:
            return None
        reason, hint = cls._REASONS[code]
        where = f": {path}" if path else ""
        return cls(f"{reason}{where}", hint=hint)


class SloViolation(TritonkitError):
    """A model's live metrics break its service-level objective (``tritonkit check``)."""

    exit_code = 15


class Inconclusive(TritonkitError):
    """A window had too little traffic to judge a model against its SLO (``tritonkit check``):
    neither a pass nor a violation."""

    exit_code = 17


class TrustError(TritonkitError):
    """A release is unsigned, or not signed by a key the trust policy lists, or its signature does
    not cover what is there (``release/trust.py``). Nothing was served, published or written."""

    exit_code = 16


_WORD = re.compile(r"[^\s'\"(),<>]+")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_USERINFO_END = re.compile(r"@(?!sha256:)")  # an '@' that does not start a digest


def mask_credentials(text: str) -> str:
    """``oci://user:pass@host/x`` -> ``oci://***@host/x``: credentials in a reference are never echoed.

    Everything up to the *last* ``@`` of a word that does not start a digest is the user part, so
    a password holding ``/``, ``@`` or ``:`` is masked whole; without a scheme a word is masked
    when its user part has a ``:`` (``bob:pw@host/x``), so ``user@host`` mentions stay readable.
    """

    def word(match: re.Match[str]) -> str:
        token = match.group(0)
        scheme = _SCHEME.match(token)
        rest = token[scheme.end() :] if scheme else token
        ends = [m.start() for m in _USERINFO_END.finditer(rest)]
        if not ends or (scheme is None and ":" not in rest[: ends[-1]]):
            return token
        return (scheme.group(0) if scheme else "") + "***" + rest[ends[-1] :]

    return _WORD.sub(word, text)


def require(module: str, extra: str) -> object:
    """Import an optional dependency or fail with the exact install command.

    Args:
        module: the import name, e.g. ``"torch"``.
        extra: the tritonkit extra that provides it, e.g. ``"torch"``.

    Returns:
        The imported module.

    Raises:
        DependencyError: when the module cannot be imported.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"'{module}' is not installed ({exc})",
            hint=f"pip install 'tritonkit[{extra}]'",
        ) from exc


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """``"did you mean 'x'?"`` for the closest choice (case-insensitive), or ``""``."""
    import difflib

    lowered = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f"did you mean '{lowered[close[0]]}'?" if close else ""
