"""``cryosr-cryosparc``: super-resolve the exposures of a CryoSPARC job (or, with ``--follow-session``, of a
Live session as they come) into an External job."""

from __future__ import annotations

import logging
import sys

from cryosr.core.errors import CryosrError
from cryosr.cryosparc_plugin.args import build_parser, config_from_args

logger = logging.getLogger(__name__)

__all__ = ["main"]


def _one_line(exc: BaseException) -> str:
    data = getattr(exc, "data", None)
    detail = data.get("detail") if isinstance(data, dict) else None
    text = detail if isinstance(detail, str) else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return " ".join(text.split())


def _run(config):
    """One job from a source job's output, or a follow of a Live session (``--follow-session``)."""
    if config.session_uid:
        from cryosr.cryosparc_plugin.live import follow

        return follow(config)
    from cryosr.cryosparc_plugin.job import run

    return run(config)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 2 bad input or a CryoSPARC error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
        summary = _run(config)
    except CryosrError as exc:
        print(f"cryosr-cryosparc: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__name__ != "APIError":
            raise
        print(f"cryosr-cryosparc: error: CryoSPARC rejected a request: {_one_line(exc)}", file=sys.stderr)
        return 2
    if config.session_uid:
        logger.info("%s-%s: %s; %d polls, %d saves", config.project_uid, summary.job_uid or "(no job: nothing came)",
                    summary.stopped_by, summary.polls, summary.saves)  # fmt: skip
    logger.info(
        "%s-%s: %d micrographs in output 'micrographs' (%d computed, %d reused, %s transfer)",
        config.project_uid,
        summary.job_uid,
        summary.n_exposures,
        summary.n_processed,
        summary.n_reused,
        summary.transfer,
    )
    return 0
