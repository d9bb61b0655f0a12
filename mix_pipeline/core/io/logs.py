"""Keeping datatrove's per-task logs in their files and the terminal readable.

datatrove gives every task a log file under the stage's logging folder (kept: it is where a
failed task's details are) and also echoes INFO to stderr, which buries the pipeline's own
progress lines. MIX_PIPELINE_DATATROVE_LOG_LEVEL (default WARNING) sets what reaches stderr.
The level travels to worker processes through the environment; the hook is installed when
this module is imported, which the workers do when they unpickle our pipeline steps.
"""

from __future__ import annotations

import os
import sys

ENV_VAR = "MIX_PIPELINE_DATATROVE_LOG_LEVEL"
_FORMAT = "{time:HH:mm:ss} | {level: <7} | datatrove | {message}"


def terminal_level() -> str:
    return os.environ.get(ENV_VAR, "WARNING").upper()


def _terminal_only() -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=terminal_level(), format=_FORMAT)


def install() -> None:
    """Wrap the two datatrove functions that (re)attach its stderr handler."""
    import datatrove.executor.base as executor_base
    import datatrove.utils.logging as datatrove_logging
    from loguru import logger

    if getattr(executor_base.add_task_logger, "_mix_pipeline", False):
        return
    original = executor_base.add_task_logger

    def add_task_logger(logging_dir, rank, local_rank=0, node_rank=-1):
        logfile = original(logging_dir, rank, local_rank, node_rank)
        _terminal_only()
        logger.add(logfile, level="DEBUG")
        return logfile

    add_task_logger._mix_pipeline = True
    executor_base.add_task_logger = add_task_logger
    datatrove_logging.setup_default_logger = _terminal_only
    _terminal_only()


install()
