"""`rfcls serve`: settings -> model -> engine -> app -> uvicorn, with a graceful drain on SIGTERM.

The flags and their help are generated from the Settings model, so they cannot drift from the
RFCLS_* variables; a flag wins over its variable.
"""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing
from typing import Any

import uvicorn

from service.engine import Engine
from service.settings import (
    Settings,
    SettingsError,
    env_name,
    flag_name,
    load_settings,
    unknown_env_vars,
)

log = logging.getLogger("rfcls")

# Secrets are read from the environment only, so they never show in a process listing.
ENV_ONLY = {"api_key"}
GRACEFUL_SHUTDOWN_S = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Start the HTTP service. Each setting is an environment variable or a flag; the flag wins."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    env_only = []
    for name, field in Settings.model_fields.items():
        default = "" if field.default in (None, "") else f"; default {field.default}"
        choices = _choices(field.annotation)
        listed = f"; one of {', '.join(choices)}" if choices else ""
        if name in ENV_ONLY:
            env_only.append(f"  {env_name(name)}: {field.description}{default}{listed}")
            continue
        parser.add_argument(
            flag_name(name),
            dest=name,
            default=None,
            metavar=name.upper(),
            help=f"{field.description} [{env_name(name)}{default}{listed}]",
        )
    parser.epilog = "environment only:\n" + "\n".join(env_only)


def _choices(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if isinstance(annotation, types.UnionType):
        return [c for arg in typing.get_args(annotation) for c in _choices(arg)]
    return []


class DrainingServer(uvicorn.Server):
    """Readiness turns false the moment a shutdown signal arrives; uvicorn then stops accepting
    connections, waits for the open requests, and the lifespan shutdown drains the engine."""

    def __init__(self, config: uvicorn.Config, engine: Engine):
        super().__init__(config)
        self._engine = engine

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        self._engine.begin_drain()
        super().handle_exit(sig, frame)


def run(args: argparse.Namespace) -> int:
    overrides = {name: getattr(args, name, None) for name in Settings.model_fields}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"rfcls serve: invalid settings\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in unknown_env_vars():
        log.warning("%s is not a setting; ignored (see rfcls serve --help)", name)

    # torch is imported only now, so `--help` and settings errors stay fast
    from rfmodel.bundle import BundleError
    from service.app import build_app, build_context
    from service.inference import DeviceError
    from service.loading import load_model

    try:
        card, runner = load_model(settings)
    except (BundleError, DeviceError) as exc:
        print(f"rfcls serve: cannot load the model: {exc}", file=sys.stderr)
        return 2
    log.info(
        "model %s (backend %s, %d classes) on %s from %s",
        card.version,
        card.backend,
        len(card.classes),
        card.device,
        card.path,
    )
    ctx = build_context(settings, card, runner)
    config = uvicorn.Config(
        build_app(ctx),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # per-request access lines cost latency; the metrics count every request anyway
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    DrainingServer(config, ctx.engine).run()
    return 0
