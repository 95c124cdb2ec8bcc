"""The one engine between the HTTP layer and the model: a bounded queue, a batcher and a single
worker thread that owns the device.

Requests are lists of IQ frames. The worker takes frames, not requests, so one large request can
span several batches and small ones share a batch; frames are grouped by length bucket (power of
two) so a batch pads each frame to at most twice its length. Requests take turns, a batch each
(round-robin): one large request does not hold the device until its last frame while the
requests behind it are refused. The event loop never computes: it enqueues, and the worker
settles each request's future through `loop.call_soon_threadsafe`.

Torch-free: the model sits behind the `Runner` interface (service/inference.py implements it),
which keeps this module testable with any callable and importable by the protocol layer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from service.admission import QueueWaitLimit
from service.batch_cost import BatchCost
from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)


SNR_DB = 2  # the column of preprocessing.occupancy.FIELDS that holds the SNR


@dataclass(frozen=True)
class BatchOutput:
    probabilities: np.ndarray  # [B, C] float32, rows in the order of the frames given
    signal: np.ndarray  # [B, 3] float32: preprocessing.occupancy.FIELDS of each frame
    preprocess_s: float
    inference_s: float


class Runner(Protocol):
    def run(self, frames: Sequence[np.ndarray]) -> BatchOutput:
        """Classify a batch of 1-D complex64 frames (lengths may differ)."""
        ...


class OutOfMemory(Exception):
    """Raised by a Runner when the device has no memory for this batch; the engine retries the
    batch in halves."""


class EngineError(Exception):
    """A request the engine did not answer with a prediction."""


class QueueFull(EngineError):
    pass


class NotReady(EngineError):
    """Warming up, draining for shutdown, or the worker has died."""


class DeadlineExceeded(EngineError):
    pass


class BatchFailed(EngineError):
    """The model raised on the batch holding this request; other batches are unaffected."""


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray  # [N, C], one row per frame of the request
    signal: np.ndarray  # [N, 3], the same rows' occupied band (BatchOutput.signal)
    queue_s: float
    preprocess_s: float
    inference_s: float


Settle = Callable[[Prediction | EngineError], None]


class _Request:
    __slots__ = (
        "cancelled",
        "deadline",
        "enqueued",
        "frames",
        "inference_s",
        "preprocess_s",
        "probabilities",
        "queued",
        "settle",
        "settled",
        "signal",
        "started",
        "tally",
        "unfinished",
    )

    def __init__(self, frames: Sequence[np.ndarray], enqueued: float, deadline: float, settle):
        self.frames = frames
        self.enqueued = enqueued
        self.deadline = deadline
        self.settle: Settle = settle
        self.probabilities: list[np.ndarray | None] = [None] * len(frames)
        self.signal: list[np.ndarray | None] = [None] * len(frames)
        # its frames still in the queue, in order, and their [frames, samples] per length bucket
        self.queued = [_Item(self, i, length_bucket(len(f))) for i, f in enumerate(frames)]
        self.tally: dict[int, list[int]] = {}
        self.unfinished = len(frames)  # frames without a result
        self.started: float | None = None
        self.preprocess_s = 0.0
        self.inference_s = 0.0
        self.cancelled = False
        self.settled = False

    @property
    def taken(self) -> bool:
        """Some frame of it has left the queue for the device: from then on it runs to its end."""
        return len(self.queued) < len(self.frames)

    def deadline_passed(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"not started within {1000 * (self.deadline - self.enqueued):.0f} ms"
        )

    def finish(self, outcome: Prediction | EngineError) -> None:
        if not self.settled:
            self.settled = True
            self.settle(outcome)


class Arrival:
    """A request the HTTP layer is still reading or parsing; see Engine.arriving."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = True


@dataclass(frozen=True, slots=True)
class _Item:
    request: _Request
    index: int
    bucket: int


def length_bucket(n_samples: int) -> int:
    return max(n_samples - 1, 0).bit_length()


def warmup_batch_sizes(max_batch: int) -> list[int]:
    sizes = [1]
    while sizes[-1] < max_batch:
        sizes.append(min(sizes[-1] * 2, max_batch))
    return sizes


class Engine:
    def __init__(
        self,
        runner: Runner,
        metrics: ServiceMetrics,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        deadline_s: float,
        warmup_samples: int,
        warmup_lengths: Sequence[int] = (),
        queue_wait: QueueWaitLimit | None = None,
        loop_lag: Callable[[], float] = lambda: 0.0,
        stall_s: float | None = None,
    ):
        """warmup_samples: the length of the warm-up's timed frames, which the cost line is
        fitted to; warmup_lengths: more lengths the warm-up runs, untimed. loop_lag: seconds the
        event loop runs late now (service/loop_lag.py), counted in the work ahead of a
        newcomer. stall_s: a batch running longer marks the engine failed (see live)."""
        self._runner = runner
        self._metrics = metrics
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._max_queue = max_queue
        self._deadline_s = deadline_s
        self._warmup_samples = warmup_samples
        self._warmup_lengths = sorted({warmup_samples, *warmup_lengths})
        self._queue_wait = queue_wait
        self._loop_lag = loop_lag
        if queue_wait is not None:
            metrics.queue_wait_limit.set(queue_wait.limit_s)
        # one cost line per length bucket (a batch holds frames of one bucket): a frame's cost
        # grows faster than its samples (attention), so one line through batches of every
        # length was bent by a single long frame: after one 262,144-sample frame (0.75 s on 2
        # CPU cores) it priced a 32,768-sample frame at 165 ms, not 21, and refused requests an
        # idle engine could serve for the next several batches
        self._costs: dict[int, BatchCost] = {}
        # when the batch on the device should end (perf_counter), by estimate; 0 when idle
        self._busy_until = 0.0
        self._stall_s = stall_s
        self._batch_started = 0.0  # perf_counter; 0 when idle
        self._cond = threading.Condition()
        # requests with frames still queued, in the order of their turns (the line)
        self._waiting: dict[_Request, None] = {}
        # those of them with frames in the batch on the device: they go to the back of the line
        # when it ends (_rotate)
        self._served: dict[_Request, None] = {}
        self._arriving = 0  # requests being read by the HTTP layer, not yet submitted
        self._draining = False  # readiness off; requests still taken until stop()
        self._stopping = False  # no more requests; the worker ends once the queue is empty
        self._warm = False
        self._warm_up_ended = threading.Event()
        self._thread = threading.Thread(target=self._work, name="rfcls-engine", daemon=True)

    # ---- state -------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        """False once the worker thread has died, or is stuck in one batch for longer than
        stall_s (a hung device call or driver: it answers nobody, and nothing but a restart
        frees it)."""
        return (not self._thread.ident or self._thread.is_alive()) and not self.stalled

    @property
    def stalled(self) -> bool:
        started = self._batch_started
        return (
            self._stall_s is not None
            and started > 0
            and time.perf_counter() - started > self._stall_s
        )

    @property
    def warmed_up(self) -> bool:
        """Whether the warm-up ever succeeded (it runs once, at start)."""
        return self._warm

    @property
    def ready(self) -> bool:
        return self._warm and not self._draining and self.live

    @property
    def state(self) -> str:
        if self.stalled:
            return "stalled"
        if not self.live:
            return "failed"
        if self._draining or self._stopping:
            return "draining"
        return "ready" if self._warm else "warming_up"

    def start(self) -> None:
        self._thread.start()

    def wait_for_warm_up(self) -> None:
        """Until the warm-up has ended, in success or not (then readiness stays false)."""
        self._warm_up_ended.wait()

    def begin_drain(self) -> None:
        """Readiness turns false so load balancers look elsewhere; requests already on their way
        (received by the server, not yet submitted) are still taken and answered."""
        self._draining = True

    def stop(self, timeout: float | None = None) -> None:
        """Take no more requests, answer everything queued, then end the worker; waits at most
        `timeout` for it (a stalled worker never ends: the process exits without it, as it is a
        daemon thread)."""
        with self._cond:
            self._draining = True
            self._stopping = True
            self._cond.notify_all()
        if self._thread.ident:
            self._thread.join(0 if self.stalled else timeout)
            if self._thread.is_alive():
                log.error("the engine's worker did not end within %s s; leaving it", timeout)

    # ---- submitting (any thread) -----------------------------------------------------------------
    @contextmanager
    def arriving(self) -> Iterator[Arrival]:
        """Wrap the reading and parsing of a request that will be submitted with this arrival.
        The batcher waits (up to max_wait) for more frames only while some request is arriving,
        so a lone request is never held back for company that is not coming. Raises NotReady or
        QueueFull at once where submit would, before the request's body is read."""
        arrival = Arrival()
        with self._cond:
            # refused before the body is read: under overload most requests are refused, and
            # reading and parsing their bodies only to refuse them took CPU from the model
            self._check_admission()
            self._arriving += 1
        try:
            yield arrival
        finally:
            if arrival.pending:  # refused before it was submitted
                with self._cond:
                    self._arrived(arrival)

    def _arrived(self, arrival: Arrival) -> None:
        """Lock held."""
        arrival.pending = False
        self._arriving -= 1
        self._cond.notify()

    def submit(
        self,
        frames: Sequence[np.ndarray],
        settle: Settle,
        deadline_s: float | None = None,
        arrival: Arrival | None = None,
    ) -> _Request:
        """Queue a request; `settle` is called exactly once, on the worker thread (or, through
        predict, on the event loop at the deadline), unless the request is refused here
        (QueueFull, NotReady are raised at once). `deadline_s` can only shorten the engine's own
        deadline, which a request must start within; once started it runs to its end."""
        if not frames:
            raise ValueError("a request needs at least one frame")
        now = time.perf_counter()
        deadline = now + min(self._deadline_s, deadline_s or self._deadline_s)
        request = _Request(frames, now, deadline, settle)
        with self._cond:
            if arrival is not None and arrival.pending:
                self._arrived(arrival)
            self._check_admission()
            self._waiting[request] = None
            self._count(request.queued, +1)
            self._metrics.queue_depth.set(len(self._waiting))
            self._cond.notify()
        return request

    def _check_admission(self) -> None:
        """NotReady or QueueFull now, or nothing. Lock held."""
        if not self._warm or self._stopping or not self._thread.is_alive():
            raise NotReady(f"the service is {self.state.replace('_', ' ')}")
        if len(self._waiting) >= self._max_queue:
            raise QueueFull(f"{len(self._waiting)} requests are already waiting")
        self._check_work_ahead()

    def _check_work_ahead(self) -> None:
        """Refuse now rather than admit a request that would wait past the limit: a quick 503 the
        client can retry elsewhere beats a late answer, and it keeps the queue short enough that
        the admitted requests stay within the budget. What counts is what is left of the batch
        on the device, by estimate, and the full batches of the turns ahead (_turns_ahead), which
        run before the batch this request can join. The batch on the device counts only with
        what is left of it: a request arriving late in it starts soon. (An earlier version left
        it out entirely, so a request could wait a whole batch; when one 32k-sample frame came
        to cost 18 ms on the CPU, that wait and its own batch passed the 30 ms budget: admitted
        p99 60 ms at 64 clients.)
        The event loop's lag counts too: a newcomer's answer waits for the loop as well, and
        where the loop is the bottleneck (a GPU serving from CUDA graphs) it is most of the wait.
        The limit is the queue-wait limit's current one (service/admission.py); a batch holds
        at most its floor. Lock held."""
        if self._queue_wait is None:
            return
        lag_s = self._loop_lag()
        ahead_s = lag_s + max(0.0, self._busy_until - time.perf_counter())
        for bucket, (frames, samples) in self._turns_ahead().items():
            cost = self._cost(bucket)
            frame_samples = samples / frames
            batch_samples = self._full_batch_frames(cost, frame_samples) * frame_samples
            # a batch closes at about _batch_close_s (_batch_is_full aims there) but holds at
            # least one frame, whose cost may pass it: on a CPU one 32k-sample frame costs 3x
            # the floor
            batch_s = max(
                min(cost.seconds(batch_samples), self._batch_close_s(cost)),
                cost.seconds(frame_samples),
            )
            ahead_s += samples // batch_samples * batch_s
        # at least one whole batch (of the budget's frames: the newcomer's length is not known
        # yet): where a batch's fixed part passes the limit, every request behind one would be
        # refused
        limit_s = max(
            self._queue_wait.limit_s,
            self._batch_close_s(self._cost(length_bucket(self._warmup_samples))),
        )
        if ahead_s > limit_s:
            raise QueueFull(
                f"about {1000 * ahead_s:.0f} ms of work is ahead (the event loop's lag "
                f"{1000 * lag_s:.0f} ms of it); the limit is {1000 * limit_s:.0f} ms"
            )

    def _turns_ahead(self) -> dict[int, list[float]]:
        """Per length bucket, the [frames, samples] that run before a newcomer's first batch.
        Requests take a batch each in turn (_rotate), so each request in the line counts with at
        most one full batch of a bucket, not with all its frames: behind a request of 32 frames
        of 262,144 samples (seconds on 2 CPU cores) a newcomer waits for one such frame, where
        it was refused for all 32. Those with frames on the device count not at all: they go to
        the back of the line, behind the newcomer, when that batch ends. Lock held."""
        ahead: dict[int, list[float]] = {}
        for request in self._waiting:
            if request in self._served:
                continue
            for bucket, (frames, samples) in request.tally.items():
                turn, turn_samples = frames, float(samples)
                if frames > 1:  # (one frame is a turn of its own: the common case, no sums)
                    frame_samples = samples / frames
                    turn = min(frames, self._full_batch_frames(self._cost(bucket), frame_samples))
                    turn_samples = turn * frame_samples
                tally = ahead.setdefault(bucket, [0, 0.0])
                tally[0] += turn
                tally[1] += turn_samples
        return ahead

    def _full_batch_frames(self, cost: BatchCost, frame_samples: float) -> int:
        """Frames in a full batch of frames of this length: max_batch, or as many as reach the
        queue-wait floor's work (_batch_is_full), at least one. Lock held."""
        frames = self._max_batch
        per_frame_s = cost.per_sample_s * frame_samples
        if per_frame_s > 0:
            room_s = self._batch_close_s(cost) - cost.fixed_s
            frames = min(frames, max(1, math.ceil(room_s / per_frame_s)))
        return frames

    def observe_admitted(self, seconds: float) -> None:
        """The latency of a request this engine took (answered, or dropped at its deadline) as
        the HTTP layer measured it, which steers the queue-wait limit. Event loop."""
        if self._queue_wait is not None:
            before = self._queue_wait.limit_s
            self._queue_wait.observe(seconds)
            if self._queue_wait.limit_s != before:  # most answers leave it where it was
                self._metrics.queue_wait_limit.set(self._queue_wait.limit_s)

    async def predict(
        self,
        frames: Sequence[np.ndarray],
        deadline_s: float | None = None,
        arrival: Arrival | None = None,
    ) -> Prediction:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()

        def settle(outcome: Prediction | EngineError) -> None:
            loop.call_soon_threadsafe(_settle_future, future, outcome)

        request = self.submit(frames, settle, deadline_s, arrival)
        # at the deadline, not when the batch on the device ends: behind a long batch a
        # request's 504 (v2 `timeout`) would come that batch's length late
        timer = loop.call_later(
            max(0.0, request.deadline - time.perf_counter()), self._expire, request
        )
        try:
            return await future
        except asyncio.CancelledError:
            self._withdraw(request)
            raise
        finally:
            timer.cancel()

    def _expire(self, request: _Request) -> None:
        """Its deadline came: 504 unless it has started. Event loop."""
        with self._cond:
            if request.taken or request.settled:
                return
            request.finish(request.deadline_passed())
            self._forget([request])

    def _withdraw(self, request: _Request) -> None:
        """The client went away: its frames leave the queue now, not when the worker next looks,
        so that they neither hold a queue slot nor count as work ahead. Frames already on the
        device finish, unanswered. Event loop."""
        with self._cond:
            request.cancelled = True
            self._forget([request])

    # ---- the worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            warmup_ms = self._warm_up()
            self._warm = True
        except Exception:
            log.exception("warm-up failed; the service will not become ready")
        finally:
            self._warm_up_ended.set()
        if not self._warm:
            return
        cost = self._cost(length_bucket(self._warmup_samples))
        frame_s = cost.per_sample_s * self._warmup_samples
        log.info(
            "engine warm (frames of %s samples); ready. Batches of %s frames of %d samples took "
            "%s ms; cost line: %.2f ms + %.2f ms a frame",
            "/".join(map(str, self._warmup_lengths)),
            "/".join(map(str, warmup_ms)),
            self._warmup_samples,
            "/".join(f"{ms:.2f}" for ms in warmup_ms.values()),
            1e3 * cost.fixed_s,
            1e3 * frame_s,
        )
        while (batch := self._next_batch()) is not None:
            if not batch:  # empty when the head request was cancelled meanwhile
                continue
            samples = sum(len(item.request.frames[item.index]) for item in batch)
            self._batch_started = time.perf_counter()
            self._busy_until = self._batch_started + self._cost(batch[0].bucket).seconds(samples)
            try:
                self._run(batch)
            finally:
                # done, whatever the estimate said: an estimate inflated by one slow batch must
                # not outlive the batch it was made for
                self._busy_until = self._batch_started = 0.0

    def _warm_up(self) -> dict[int, float]:
        """Every batch size once at every warm-up length, untimed, then once timed at
        warmup_samples; returns the timed ms per size."""
        rng = np.random.default_rng(0)
        n = max(self._warmup_lengths)
        noise = (0.1 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)
        sizes = warmup_batch_sizes(self._max_batch)
        # untimed first: a first call pays for lazy initialisation (on a GPU: context, FFT plans,
        # kernel selection, the batch's CUDA graph; a second or more), which as the first cost
        # sample made the admission estimate refuse nearly every request until enough batches
        # had diluted it. Each length has its own FFT plans and graphs.
        for length in self._warmup_lengths:
            for size in sizes:
                self._run_splitting([noise[:length]] * size)
        frame = noise[: self._warmup_samples]
        timed_ms = {}
        for size in sizes:
            start = time.perf_counter()
            self._run_timed([frame] * size)
            timed_ms[size] = 1e3 * (time.perf_counter() - start)
        return timed_ms

    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            self._rotate()
            while True:
                self._drop_expired()
                if self._waiting:
                    break
                if self._stopping:
                    return None
                self._cond.wait()
            head = next(iter(self._waiting)).queued[0]
            # the wait counts from when the head was queued: one that already waited behind a
            # running batch waits no longer
            wait_until = head.request.enqueued + self._max_wait_s
            while True:
                batch, full = self._same_bucket(head.bucket)
                if full or self._stopping or not self._arriving:
                    break
                remaining = wait_until - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._take(batch)
            return batch

    def _same_bucket(self, bucket: int) -> tuple[list[_Item], bool]:
        """The next batch of the bucket's queued frames, in the line's order, and whether it is
        full."""
        batch, samples = [], 0
        cost = self._cost(bucket)
        for request in self._waiting:
            if request.cancelled:
                continue
            for item in request.queued:
                if item.bucket == bucket:
                    batch.append(item)
                    samples += len(request.frames[item.index])
                    if self._batch_is_full(cost, len(batch), samples):
                        return batch, True
        return batch, False

    def _batch_is_full(self, cost: BatchCost, frames: int, samples: int) -> bool:
        """At max_batch frames, or at the estimated work of the queue-wait floor (on a device
        whose fixed part is over half the floor, of twice that part: _batch_close_s): a request
        admitted behind the running batch then waits for about the limit, and its own batch
        takes at most about that, so the budget holds on a slow device too, where a full batch
        would not. The floor, not the current limit: the limit rises only while answers are
        quick, and longer batches would then lengthen every wait behind them."""
        if frames >= self._max_batch:
            return True
        if self._queue_wait is None:
            return False
        return cost.seconds(samples) >= self._batch_close_s(cost)

    def _batch_close_s(self, cost: BatchCost) -> float:
        """The estimated time at which a batch is full: the floor, or twice the batch's fixed
        part where that is longer, so that a batch spends at least as long on its frames as on
        what it pays whatever its size; but at most half the answer target, since a newcomer may
        wait one such batch before its own. The floor alone, once one frame's fixed part passed
        it (6.4 ms against 6 on an H100), closed every batch at one frame: batching gave 1.0x.
        The floor plus the fixed part instead also lengthened the CPU's batches of 4,096-sample
        requests (fixed 2.5 ms, 3.7 ms a request), and twice as many Poisson requests at 0.7x
        load were refused. Without the cap, a fixed part that grows under load (an H100's under 64
        clients) lets a wait for one batch and then one's own pass the budget
        (docs/experiments/batch_close/; there the admitted p99 reached 107 ms)."""
        queue_wait = self._queue_wait
        return max(queue_wait.floor_s, min(2 * cost.fixed_s, queue_wait.target_s / 2))

    def _take(self, batch: list[_Item]) -> None:
        taken = set(map(id, batch))
        self._count(batch, -1)
        for request in dict.fromkeys(item.request for item in batch):
            request.queued = [item for item in request.queued if id(item) not in taken]
            if request.queued:
                self._served[request] = None
            else:
                self._waiting.pop(request, None)
        self._metrics.queue_depth.set(len(self._waiting))

    def _rotate(self) -> None:
        """The requests of the batch just run that have frames left go to the back of the line,
        behind those that came while it ran: every request gets a batch before any gets a second
        (FIFO by request instead let one of 32 long frames hold the device for 6 s, and the
        work queued ahead refused everything that came meanwhile). Lock held."""
        for request in self._served:
            if request in self._waiting:  # not failed or withdrawn meanwhile
                del self._waiting[request]
                self._waiting[request] = None
        self._served.clear()

    def _drop_expired(self) -> None:
        now = time.perf_counter()
        # a request split over several batches is past its deadline only if none has started:
        # dropping the rest would waste the frames computed and answer 504 to a running request
        dropped = [r for r in self._waiting if r.cancelled or (not r.taken and r.deadline < now)]
        if not dropped:
            return
        for request in dropped:
            if not request.cancelled:
                request.finish(request.deadline_passed())
        self._forget(dropped)

    def _count(self, items: Iterable[_Item], sign: int) -> None:
        """Add (+1) or take away (-1) the items in their request's per-bucket tally of its
        queued frames. Lock held."""
        for item in items:
            tally = item.request.tally.setdefault(item.bucket, [0, 0])
            tally[0] += sign
            tally[1] += sign * len(item.request.frames[item.index])
            if tally[0] == 0:
                del item.request.tally[item.bucket]

    def _cost(self, bucket: int) -> BatchCost:
        """The bucket's cost line; one without batches yet borrows the nearest bucket's (scaled
        by samples), or is 0 before any batch."""
        if bucket in self._costs or not self._costs:
            return self._costs.get(bucket, BatchCost())
        return self._costs[min(self._costs, key=lambda b: (abs(b - bucket), b))]

    def _forget(self, requests: Sequence[_Request]) -> None:
        """Remove the requests' remaining frames from the queue (lock held)."""
        for request in requests:
            self._waiting.pop(request, None)
        self._metrics.queue_depth.set(len(self._waiting))

    def _run(self, batch: list[_Item]) -> None:
        start = time.perf_counter()
        requests = list(dict.fromkeys(item.request for item in batch))
        for request in requests:
            if request.started is None:
                request.started = start
                self._metrics.observe_stage("queue", start - request.enqueued)
        try:
            out = self._run_timed([item.request.frames[item.index] for item in batch])
            # a runner bug fails here
            rows = list(zip(batch, out.probabilities, out.signal, strict=True))
        except Exception:
            if len(requests) > 1:
                # one request's frames may have broken it: each again on its own, so that only
                # that request fails and the ones that shared its batch are answered
                log.warning("a batch of %d requests failed; retrying each alone", len(requests))
                for request in requests:
                    self._run([item for item in batch if item.request is request])
                return
            # the traceback goes to the log, never to the client
            log.exception("a batch of %d frames failed", len(batch))
            error = BatchFailed("internal error while classifying this request")
            for request in requests:
                request.finish(error)
            with self._cond:
                self._forget(requests)
            return
        self._metrics.observe_batch(len(batch))
        self._metrics.observe_signal(out.signal[:, SNR_DB])
        self._metrics.observe_stage("preprocess", out.preprocess_s)
        self._metrics.observe_stage("inference", out.inference_s)
        for item, probabilities, signal in rows:
            item.request.probabilities[item.index] = probabilities
            item.request.signal[item.index] = signal
            item.request.unfinished -= 1
        for request in requests:
            request.preprocess_s += out.preprocess_s
            request.inference_s += out.inference_s
            if request.unfinished == 0:
                request.finish(
                    Prediction(
                        probabilities=np.stack(request.probabilities),
                        signal=np.stack(request.signal),
                        queue_s=request.started - request.enqueued,
                        preprocess_s=request.preprocess_s,
                        inference_s=request.inference_s,
                    )
                )

    def _run_timed(self, frames: list[np.ndarray]) -> BatchOutput:
        start = time.perf_counter()
        out = self._run_splitting(frames)
        seconds = time.perf_counter() - start
        bucket = length_bucket(len(frames[0]))  # a batch's frames share one
        if bucket not in self._costs:
            # from the shape (fixed part against per sample) of the line it borrowed until now
            self._costs[bucket] = BatchCost(shape=self._cost(bucket).shape)
        cost = self._costs[bucket]
        cost.observe(seconds, sum(len(f) for f in frames))
        self._metrics.batch_cost_fixed.set(cost.fixed_s)
        self._metrics.batch_cost_per_sample.set(cost.per_sample_s)
        if self._queue_wait is not None:
            self._metrics.batch_close.set(self._batch_close_s(cost))
        return out

    def _run_splitting(self, frames: list[np.ndarray]) -> BatchOutput:
        try:
            return self._runner.run(frames)
        except OutOfMemory:
            if len(frames) == 1:
                raise
        # retried outside the except block, so nothing of the failed attempt is still held
        half = len(frames) // 2
        log.warning("out of device memory on %d frames; retrying in halves", len(frames))
        first = self._run_splitting(frames[:half])
        second = self._run_splitting(frames[half:])
        return BatchOutput(
            probabilities=np.concatenate([first.probabilities, second.probabilities]),
            signal=np.concatenate([first.signal, second.signal]),
            preprocess_s=first.preprocess_s + second.preprocess_s,
            inference_s=first.inference_s + second.inference_s,
        )


def _settle_future(future: asyncio.Future, outcome: Prediction | EngineError) -> None:
    if future.done():  # cancelled by a client that went away
        return
    if isinstance(outcome, EngineError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
