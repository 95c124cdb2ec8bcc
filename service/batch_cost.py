"""What a batch costs on the device, from the batches just run: fixed + per_sample * samples.

Why two parts: on a CPU a batch's time grows with its samples and little else; on a GPU most of a
small batch's time is fixed (kernel launches, Python, copies), and 16 frames take little longer
than one. A per-sample average alone (seconds / samples of recent batches) charged the fixed part
to every sample: on an H100 one 32k-sample frame took 4.5 ms, so the estimate said a batch of
three passed the queue-wait floor (6 ms), the batcher closed batches there (mean 2.9 frames at 64
clients) and batching gave 2.4x the frames/s of batch-1 serving, not the 3x it can.

How: an exponentially weighted least-squares line through (samples, seconds) of recent batches.
The warm-up runs every batch size once, so the line starts from batches of 1 to max_batch
frames. While the recent batches are all about one size the slope is undetermined: the line then
keeps the shape (the fixed part's share) of the last line the sizes did determine, the warm-up's
at first, moved to the recent batches' level. Through the origin instead (the per-sample average,
still what it does before any line is determined), a device whose fixed part alone passed the
queue-wait floor never batched again: on an H100 one 32k-sample frame came to take 6.4 ms, a
second frame then looked like 6.4 ms more, batches stayed at one frame and batching gave 1.0x.
A negative part, which noise can give, is dropped and the other refitted alone.
"""

from __future__ import annotations


class BatchCost:
    DECAY = 0.8  # per batch, of the weight of those before it: about the last five count
    # below this relative spread of the recent sizes (std / mean) the slope is left undetermined
    MIN_SPREAD = 0.05

    def __init__(self, shape: tuple[float, float] | None = None) -> None:
        """shape: a (fixed, per sample) line to keep the shape of until one is determined."""
        self._weight = 0.0
        self._x = self._y = self._xx = self._xy = 0.0  # weighted sums: samples, seconds
        self.fixed_s = 0.0
        self.per_sample_s = 0.0
        self._shape = shape  # the last determined (fixed, per sample)

    @property
    def shape(self) -> tuple[float, float] | None:
        return self._shape

    def observe(self, seconds: float, samples: int) -> None:
        x = float(max(samples, 1))
        d = self.DECAY
        self._weight = d * self._weight + 1.0
        self._x = d * self._x + x
        self._y = d * self._y + seconds
        self._xx = d * self._xx + x * x
        self._xy = d * self._xy + x * seconds
        self._fit()

    def seconds(self, samples: float) -> float:
        """Estimated seconds of a batch of this many samples (0 before any batch)."""
        return self.fixed_s + self.per_sample_s * samples if samples > 0 else 0.0

    def _fit(self) -> None:
        w, x, y = self._weight, self._x, self._y
        spread = w * self._xx - x * x  # w^2 times the weighted variance of the sizes
        if spread > (self.MIN_SPREAD * x) ** 2:
            slope = (w * self._xy - x * y) / spread
            fixed = (y - slope * x) / w
            if slope < 0:  # no growth with size: a constant, the mean
                fixed, slope = y / w, 0.0
            elif fixed < 0:  # no fixed part: proportional to the samples
                fixed, slope = 0.0, self._xy / self._xx
            self.fixed_s, self.per_sample_s = fixed, slope
            self._shape = (fixed, slope)
            return
        predicted = 0.0 if self._shape is None else self._shape[0] * w + self._shape[1] * x
        if predicted > 0:
            level = y / predicted  # the recent cost over what the shape predicts for it
            self.fixed_s, self.per_sample_s = self._shape[0] * level, self._shape[1] * level
            return
        # through the origin: proportional to the samples
        self.fixed_s, self.per_sample_s = 0.0, self._xy / self._xx
