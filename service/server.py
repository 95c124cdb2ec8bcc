"""`rfcls serve`: settings -> model -> engine -> app -> uvicorn, with a graceful drain on SIGTERM.

The flags and their help are generated from the Settings model, so they cannot drift from the
RFCLS_* variables; a flag wins over its variable.

With `workers` > 1 this process binds the socket and supervises that many spawned worker processes,
each of them serving it as the single process does; it never imports torch, so CUDA is only ever
initialised in the workers.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import logging
import multiprocessing
import signal
import socket
import sys
import time
import types
import typing
from multiprocessing.context import SpawnProcess
from typing import Any

import uvicorn
from uvicorn._subprocess import get_subprocess
from uvicorn.config import STARTUP_FAILURE

from service.engine import Engine
from service.metrics import multiprocess_metrics_dir, worker_exited
from service.protocol.head_limit import HeadLimitProtocol
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
SUPERVISE_EVERY_S = 0.5  # as uvicorn's Multiprocess


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Start the HTTP service. Each setting is an environment variable or a flag; the flag wins."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    env_only = []
    for name, field in Settings.model_fields.items():
        value = field.default
        value = ",".join(map(str, value)) if isinstance(value, tuple) else value
        default = "" if value in (None, "") else f"; default {value}"
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
        self.engine_failed = False
        # a worker's: when its event loop last ran (time.monotonic), read by its supervisor
        self.heartbeat: ctypes.c_double | None = None

    @property
    def engine_warmed_up(self) -> bool:
        return self._engine.warmed_up

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        self._engine.begin_drain()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        # an engine whose thread has ended (its warm-up failed, or it died later) refuses every
        # request for good: the process ends, so that its supervisor (Workers, or the container's
        # restart) starts a fresh one, rather than a worker taking its share of the connections
        # only to refuse them while its siblings serve
        if not self.engine_failed and not self._engine.live:
            log.error("the engine has failed; ending this server process")
            self.engine_failed = True
        if self.heartbeat is not None:
            self.heartbeat.value = time.monotonic()
        return self.engine_failed or await super().on_tick(counter)


def run(args: argparse.Namespace) -> int:
    # As PID 1 in a container, a signal without a handler is ignored: until uvicorn installs its
    # own, a SIGTERM during the model's load would wait out the whole grace period for SIGKILL.
    signal.signal(signal.SIGTERM, _stop_before_serving)
    overrides = {name: getattr(args, name, None) for name in Settings.model_fields}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"rfcls serve: invalid settings\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    for name in unknown_env_vars():
        log.warning("%s is not a setting; ignored (see rfcls serve --help)", name)
    if settings.workers > 1:
        return Workers(settings).run()
    server = load_server(settings)
    if server is None:
        return 2
    server.run()
    return 1 if server.engine_failed else 0


def _stop_before_serving(sig: int, frame: types.FrameType | None) -> None:
    raise SystemExit(0)  # nothing is served yet: nothing to drain


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # per-request access lines cost latency; the metrics count every request anyway
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=settings.keep_alive_s,
        # httptools, as uvicorn's default, but with a limit on the head, which uvicorn's lacks
        http=HeadLimitProtocol,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        workers=settings.workers,
    )


def load_server(settings: Settings) -> DrainingServer | None:
    """The model, its engine and the app, ready to serve; None, the reason printed, when the model
    cannot be loaded."""
    # torch is imported only now, so `--help` and settings errors stay fast
    from rfmodel.bundle import BundleError
    from service.app import build_app, build_context
    from service.inference import DeviceError
    from service.loading import load_model

    try:
        card, runner = load_model(settings)
    except (BundleError, DeviceError) as exc:
        print(f"rfcls serve: cannot load the model: {exc}", file=sys.stderr)
        return None
    if settings.max_samples < card.feature_config.nfft:
        # every frame would be refused: shorter than one FFT, or over the limit
        print(
            f"rfcls serve: max_samples {settings.max_samples} is below the model's FFT size "
            f"({card.feature_config.nfft}): no frame could be classified",
            file=sys.stderr,
        )
        return None
    log.info(
        "model %s (backend %s, %d classes) on %s from %s",
        card.version,
        card.backend,
        len(card.classes),
        card.device,
        card.path,
    )
    ctx = build_context(settings, card, runner)
    server = DrainingServer(uvicorn_config(settings, build_app(ctx)), ctx.engine)
    # Out of the cyclic collector's reach from now on: the objects of torch, the model and the
    # app, some 250,000, which each full collection would otherwise walk while the event loop
    # and the engine wait: 120 ms on a 2-vCPU EPYC, against 3 ms for what serving leaves. Rare
    # in a server, but each one would be a budget blown for every request in flight; in the
    # load generator, which has the same heap, they were the GPU service's whole p99
    # (docs/benchmarks/README.md, session 14).
    gc.collect()
    gc.freeze()
    return server


def serve_worker(
    settings: Settings, heartbeat: ctypes.c_double, sockets: list[socket.socket]
) -> None:
    """A worker process's whole life: its own model copy and engine, serving the parent's socket."""
    configure_logging(settings)
    server = load_server(settings)
    if server is None:
        # uvicorn's convention: the supervisor stops rather than restart a worker that cannot start
        sys.exit(STARTUP_FAILURE)
    server.heartbeat = heartbeat
    server.run(sockets)
    if server.engine_failed:
        # a warm-up that failed will fail again: stop, as for a worker that cannot start; an
        # engine that died once warm: replaced
        sys.exit(1 if server.engine_warmed_up else STARTUP_FAILURE)


class Workers:
    """`settings.workers` worker processes on one socket bound here, started as uvicorn starts its
    workers and supervised by the policy of its Multiprocess supervisor: a worker that dies is
    logged and replaced, one that fails to start stops them all, and SIGINT or SIGTERM stops every
    worker, each draining its requests first. Multiprocess itself is not used because it builds its
    children's server from its own classes (uvicorn 0.54), and ours must drain the engine; nor are
    its health pings, which would have to be answered while a worker imports torch. In their
    place each serving worker stamps a heartbeat every tick of its event loop, and one whose loop
    has not run for `stall_s` is killed and replaced: the container's liveness probe cannot see
    it, since whichever worker takes the probe answers it, while the connections the wedged one
    holds hang."""

    def __init__(self, settings: Settings):
        self._settings = settings
        # bind_socket is uvicorn's; each worker builds its own app, so this config has none
        self._config = uvicorn_config(settings, app=None)
        self._stop_signal: int | None = None
        self._failed = False
        self._workers: list[tuple[SpawnProcess, ctypes.c_double]] = []  # and heartbeat

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        with multiprocess_metrics_dir():
            sock = self._config.bind_socket()
            self._workers = [self._start(sock) for _ in range(self._settings.workers)]
            while True:
                time.sleep(SUPERVISE_EVERY_S)
                # checked before replacing: a signal to the process group also stops the workers
                if self._stop_signal is not None or self._failed:
                    break
                self._kill_wedged()
                self._replace_dead(sock)
            if self._stop_signal is not None:
                log.info("%s: stopping the workers", signal.Signals(self._stop_signal).name)
            # the workers' copies keep the socket open until each has stopped accepting
            sock.close()
            self._stop_all()
        return 2 if self._failed else 0

    def _on_signal(self, sig: int, frame: types.FrameType | None) -> None:
        self._stop_signal = sig

    def _start(self, sock: socket.socket) -> tuple[SpawnProcess, ctypes.c_double]:
        # 0 until the worker serves: loading and warming up are the startup probe's to time
        heartbeat = multiprocessing.get_context("spawn").RawValue(ctypes.c_double, 0.0)
        # spawned, never forked: a child forked after CUDA was initialised cannot use it
        process = get_subprocess(
            self._config, functools.partial(serve_worker, self._settings, heartbeat), [sock]
        )
        process.start()
        log.info("started worker [%d]", process.pid)
        return process, heartbeat

    def _kill_wedged(self) -> None:
        now = time.monotonic()
        for process, heartbeat in self._workers:
            silent_s = now - heartbeat.value
            if heartbeat.value and silent_s > self._settings.stall_s and process.is_alive():
                log.error(
                    "worker [%d]: its event loop has not run for %.0f s; killing it",
                    process.pid,
                    silent_s,
                )
                process.kill()
                process.join()

    def _replace_dead(self, sock: socket.socket) -> None:
        for i, (process, _) in enumerate(self._workers):
            if process.is_alive():
                continue
            process.join()
            worker_exited(process.pid)
            if process.exitcode == STARTUP_FAILURE:
                log.error("worker [%d] failed to start; stopping", process.pid)
                self._failed = True
                return
            log.error(
                "worker [%d] died (exit code %s); starting another", process.pid, process.exitcode
            )
            self._workers[i] = self._start(sock)

    def _stop_all(self) -> None:
        for process, _ in self._workers:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker drains, as a single process does
        for process, _ in self._workers:
            process.join()
            worker_exited(process.pid)
        log.info("all workers have stopped")
