"""rfmodel.data.channel: slow flat fading is static below one Doppler bin, and the fix that made it
so (session 27) left every random draw after the fading where it was."""

import numpy as np
import pytest

from rfmodel.data import generate_example
from rfmodel.data.channel import fading
from rfmodel.data.draws import Draws


def _swing_db(gain: np.ndarray) -> float:
    magnitude = np.abs(gain)
    return float(20 * np.log10(magnitude.max() / magnitude.min()))


@pytest.mark.parametrize("n", [4096, 16384])
def test_fading_is_static_below_one_doppler_bin_and_fades_above(n):
    seen = {"static": 0, "fading": 0}
    for seed in range(40):
        rng = np.random.default_rng(seed)
        signal = rng.standard_normal(n) + 1j * rng.standard_normal(n)
        draws = Draws(rng, {"fading": True})  # Doppler and K factor drawn
        gain = fading(signal, draws) / signal
        if draws.params["doppler"] * n < 1:
            assert _swing_db(gain) < 1e-9, seed  # one gain for the whole recording
            seen["static"] += 1
        else:
            assert _swing_db(gain) > 0.5, seed
            seen["fading"] += 1
    assert min(seen.values()) >= 5, seen  # both sides of the bin were drawn


@pytest.mark.parametrize(("label", "seed"), [("qpsk", 3), ("gfsk", 8), ("am", 21)])
def test_a_doppler_under_one_bin_changes_only_the_fading(label, seed):
    """Under one bin (0.5/n) and at 1.5 bins both draw the normals for bins -1..1, so the draws
    after the fading (carrier, SNR noise, receiver) are the same; only the gain differs."""
    n = 4096  # these classes are synthesised over a period of n samples
    examples, states = [], []
    for bins in (0.5, 1.5):
        rng = np.random.default_rng(seed)
        examples.append(generate_example(label, n, rng, 5.0, fading=True, doppler=bins / n))
        states.append(rng.bit_generator.state)
    slow, fast = examples
    assert states[0] == states[1]
    del slow.params["doppler"], fast.params["doppler"]
    assert slow.params == fast.params
    assert slow.iq.tobytes() != fast.iq.tobytes()  # no longer rounded up to one bin
