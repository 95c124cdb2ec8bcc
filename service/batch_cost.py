"""What a batch costs on the device, from the batches just run: fixed + per_sample * samples.

Why two parts: on a CPU a batch's time grows with its samples and little else; on a GPU most of a
small batch's time is fixed (kernel launches, Python, copies), and 16 frames take little longer
than one. A per-sample average alone (seconds / samples of recent batches) charged the fixed part
to every sample: on an H100 one 32k-sample frame took 4.5 ms, so the estimate said a batch of
three passed the queue-wait floor (6 ms), the batcher closed batches there (mean 2.9 frames at 64
clients) and batching gave 2.4x the frames/s of batch-1 serving, not the 3x it can.

How: an exponentially weighted least-squares line through (samples, seconds) of recent batches.
The warm-up runs every batch size once, so the line starts from batches of 1 to max_batch
frames. While the recent batches are all about one size the slope is undetermined, and the line
goes through the origin (the per-sample average); a negative part, which noise can give, is
dropped and the other refitted alone.
"""

from __future__ import annotations


class BatchCost:
    DECAY = 0.8  # per batch, of the weight of those before it: about the last five count
    # below this relative spread of the recent sizes (std / mean) the slope is left undetermined
    MIN_SPREAD = 0.05

    def __init__(self) -> None:
        self._weight = 0.0
        self._x = self._y = self._xx = self._xy = 0.0  # weighted sums: samples, seconds
        self.fixed_s = 0.0
        self.per_sample_s = 0.0

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
            if slope >= 0 and fixed >= 0:
                self.fixed_s, self.per_sample_s = fixed, slope
                return
            if slope < 0:  # no growth with size: a constant, the mean
                self.fixed_s, self.per_sample_s = y / w, 0.0
                return
        # through the origin: proportional to the samples
        self.fixed_s, self.per_sample_s = 0.0, self._xy / self._xx
