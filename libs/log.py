"""Logging with structlog: a readable console in a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from libs.settings import Settings


def configure(service: str, settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper())
    as_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries that log through the standard library (nats-py) get the same stream and level.
    logging.basicConfig(
        level=max(level, logging.WARNING), stream=sys.stderr, format="%(name)s: %(message)s"
    )


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name)
