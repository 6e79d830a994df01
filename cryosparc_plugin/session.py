"""Connecting to CryoSPARC through cryosparc-tools, imported lazily (the core never needs it)."""

from __future__ import annotations

import logging
import os
import warnings

from cryosr.core.errors import CryosrError

logger = logging.getLogger(__name__)

__all__ = ["CryosparcError", "connect", "import_tools"]


class CryosparcError(CryosrError):
    """A problem on the CryoSPARC side (server unreachable, unknown project/job, rejected request)."""


def import_tools():
    """Import ``cryosparc.tools`` or fail with the install command."""
    try:
        import cryosparc.tools as tools
    except ImportError as exc:
        raise CryosparcError(
            "cryosparc-tools is not installed; install the extra: pip install 'cryosr[cryosparc]' "
            "(cryosparc-tools~=5.0, matching a CryoSPARC v5 server)"
        ) from exc
    return tools


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if line.strip() and not line.startswith("Could not connect"):
            return line.strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(url: str | None, *, email: str | None = None, password: str | None = None):
    """Open a ``CryoSPARC`` session; return ``(cs, warnings_text)``.

    Host/port environment defaults of cryosparc-tools are frozen at import; they are passed as
    ``host=None, base_port=None`` with an explicit URL so that a node exporting
    ``CRYOSPARC_MASTER_HOSTNAME`` does not make the constructor raise ``TypeError``. Version
    mismatch warnings are collected (and returned, to be written to the job log) instead of printed.
    """
    tools = import_tools()
    kwargs = {"email": email, "password": password}
    if url:
        kwargs.update(host=None, base_port=None)
        target = url
    else:
        host, port = os.environ.get("CRYOSPARC_MASTER_HOSTNAME"), os.environ.get("CRYOSPARC_BASE_PORT")
        if not host and not port:
            raise CryosparcError("no CryoSPARC URL: give --url http://host:39000 or set CRYOSPARC_BASE_URL")
        kwargs.update(host=host, base_port=port)
        target = f"http://{host or 'localhost'}:{port or 39000}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cs = tools.CryoSPARC(url, **kwargs) if url else tools.CryoSPARC(**kwargs)
        except ValueError as exc:  # no credentials / expired session
            raise CryosparcError(
                f"{target}: no valid login; set CRYOSPARC_EMAIL/CRYOSPARC_PASSWORD or run "
                f"'python -m cryosparc.tools login --url {target}'"
            ) from exc
        except RuntimeError as exc:  # unreachable, refused, bad credentials, incompatible API
            raise CryosparcError(
                f"cannot connect to CryoSPARC at {target}: {_first_line(exc.__cause__ or exc)}"
            ) from exc
    notes = []
    for w in caught:
        if "compatible" in str(w.message):
            line = str(w.message).strip().splitlines()[0]
            logger.warning("%s", line)
            notes.append(line)
        elif not issubclass(w.category, DeprecationWarning):
            logger.warning("%s", str(w.message).strip().splitlines()[0])
    return cs, notes
