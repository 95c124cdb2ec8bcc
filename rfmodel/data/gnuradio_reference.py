"""An evaluation set made by GNU Radio's own blocks: a generator independent of rfmodel.data.

Run it with Debian's interpreter (GNU Radio 3.10 from `apt-get install gnuradio`; it is not in the
project's virtualenv), as a file, not as a module:

    /usr/bin/python3 rfmodel/data/gnuradio_reference.py --out runs/gnuradio/eval --per-cell 4

and score models on it with the project's interpreter:

    .venv/bin/python -m rfmodel.data.gnuradio_eval runs/gnuradio/eval.npz MODEL_DIR [MODEL_DIR ...]

Writes OUT.npz (iq complex64 [N, n], label str [N], snr_db float32 [N] with NaN for noise, params
JSON [N]) and the same recordings as one SigMF recording (OUT.sigmf-data / OUT.sigmf-meta), one
annotation per example. Every class in rfmodel.data.CLASSES is made:

- ook, 4ask, bpsk, qpsk, 8psk, 16qam, 64qam: digital.generic_mod (the constellation modulator:
  polyphase arbitrary resampler with an 11-symbol RRC) at a fractional samples-per-symbol;
- 2fsk: analog.cpfsk_bc; gfsk: digital.gfsk_mod; gmsk: digital.gmsk_mod; each at an integer
  samples-per-symbol, then filter.pfb.arb_resampler_ccf to a fractional one;
- fm: analog.frequency_modulator_fc; am: carrier plus message; messages are GNU Radio Gaussian noise
  through a firdes low-pass, or analog.sig_source_f tones;
- ofdm: digital.ofdm_tx (802.11-like, 64-point FFT, with its sync and header symbols),
  resampled to a random occupied bandwidth;
- channel: channels.channel_model (carrier offset, sample-clock offset epsilon, static multipath
  taps) and, for half the examples, channels.selective_fading_model (Jakes sum-of-sinusoids
  time-varying multipath with fractional delays); noise: analog.noise_source_c.

Each recording starts SETTLE samples after the transmitted signal does (signal_start): the
modulators' filters emit silence until their delay has passed, about 5.5 sps^2 samples for
generic_mod, so a fixed cut left narrow signals silent for most of a recording.

SNR follows rfmodel.data's definition (in-band: signal power over the noise inside the nominal
occupied bandwidth), measured on the faded signal and set through the noise source's amplitude.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

# Run as a file, this file's directory (the rfmodel.data package) heads sys.path, where its
# modules (analog.py, channel.py, ...) would shadow top-level names; take it off.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np  # noqa: E402
from gnuradio import analog, blocks, channels, digital, filter, gr  # noqa: E402
from gnuradio.filter import pfb  # noqa: E402

# rfmodel.data.CLASSES, in its order (this script cannot import the package: that needs torch)
CLASSES = (
    "noise",
    "ook",
    "4ask",
    "bpsk",
    "qpsk",
    "8psk",
    "16qam",
    "64qam",
    "2fsk",
    "gfsk",
    "gmsk",
    "am",
    "fm",
    "ofdm",
)
SNR_VALUES = (-10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 30.0)
OFDM_SPAN = 53 / 64  # ofdm_tx default carriers -26..26: the occupied span at its native rate
SETTLE = 512  # samples dropped after the signal starts: filter and resampler transients
START_BLOCK = 64  # samples per block in which signal_start looks for the signal


def run(*chain, n_items: int | None = None, sink=None) -> np.ndarray:
    """Connect blocks in a line ending in a vector sink, run to completion, return the output."""
    top = gr.top_block()
    stages = list(chain)
    if n_items is not None:
        stages.append(blocks.head(stages[-1].output_signature().sizeof_stream_item(0), n_items))
    sink = sink or blocks.vector_sink_c()
    top.connect(*stages, sink)
    top.run()
    return np.asarray(sink.data())


def random_bytes(rng: np.random.Generator, count: int) -> blocks.vector_source_b:
    return blocks.vector_source_b(rng.integers(0, 256, count).tolist())


def constellation(label: str):
    return {
        "ook": lambda: digital.constellation_calcdist([0, 1], [0, 1], 1, 1),
        "4ask": lambda: digital.constellation_calcdist([-3, -1, 1, 3], [0, 1, 3, 2], 2, 1),
        "bpsk": digital.constellation_bpsk,
        "qpsk": digital.constellation_qpsk,
        "8psk": digital.constellation_8psk,
        "16qam": digital.constellation_16qam,
        "64qam": lambda: digital.qam_constellation(64, False),
    }[label]()


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def linear(label: str, rng: np.random.Generator, n: int, params: dict) -> tuple[np.ndarray, float]:
    sps = params["samples_per_symbol"] = log_uniform(rng, 2.0, 32.0)
    rolloff = params["rolloff"] = float(rng.uniform(0.2, 0.5))
    const = constellation(label)
    # generic_mod's RRC spans 11 symbols per polyphase arm of its resampler, which delays its
    # output by about 5.5 sps symbols (5,600 samples at 32 samples per symbol): send that more
    n_symbols = n / sps + 64 + 6 * sps
    n_bytes = math.ceil(n_symbols * const.bits_per_symbol() / 8)
    mod = digital.generic_mod(const, False, sps, True, rolloff)
    return run(random_bytes(rng, n_bytes), mod), (1 + rolloff) / sps


def fractional(rng: np.random.Generator, params: dict, fastest: float) -> tuple[int, float]:
    """An integer samples-per-symbol for the modulator and the arbitrary resampling rate that
    brings it to a random fractional one (symbol rate at most `fastest`)."""
    sps = params["samples_per_symbol"] = log_uniform(rng, max(2.0, 1 / fastest), 32.0)
    integer_sps = max(2, int(sps))
    return integer_sps, sps / integer_sps


def fsk(label: str, rng: np.random.Generator, n: int, params: dict) -> tuple[np.ndarray, float]:
    if label == "2fsk":
        h = float(rng.uniform(0.5, 2.5))
    elif label == "gfsk":
        h = float(rng.choice([rng.uniform(0.3, 0.45), rng.uniform(0.55, 0.7)]))
    else:
        h = 0.5
    params["modulation_index"] = h
    integer_sps, rate = fractional(rng, params, fastest=min(0.5, 0.76 / (h + 1)))
    params["resample_rate"] = rate
    n_symbols = math.ceil(n / params["samples_per_symbol"]) + 64
    if label == "2fsk":
        bits = blocks.vector_source_b(rng.integers(0, 2, n_symbols).tolist())
        mod = analog.cpfsk_bc(h, 1.0, integer_sps)
    elif label == "gfsk":
        bits = random_bytes(rng, math.ceil(n_symbols / 8))
        bt = params["bt"] = float(rng.uniform(0.3, 0.5))
        mod = digital.gfsk_mod(integer_sps, np.pi * h / integer_sps, bt)
    else:
        bits = random_bytes(rng, math.ceil(n_symbols / 8))
        bt = params["bt"] = float(rng.uniform(0.25, 0.5))
        mod = digital.gmsk_mod(integer_sps, bt)
    signal = run(bits, mod, pfb.arb_resampler_ccf(rate))
    return signal, (h + 1) / params["samples_per_symbol"]


def message(rng: np.random.Generator, n: int, bandwidth: float, params: dict) -> np.ndarray:
    """A real message of peak magnitude 1: low-passed Gaussian noise or 1-3 tones."""
    if rng.random() < 0.5:
        params["message"] = "noise"
        taps = filter.firdes.low_pass(1.0, 1.0, bandwidth, bandwidth / 4)
        source = analog.noise_source_f(analog.GR_GAUSSIAN, 1.0, int(rng.integers(1, 2**31)))
        x = run(source, filter.fir_filter_fff(1, taps), n_items=n, sink=blocks.vector_sink_f())
    else:
        params["message"] = "tones"
        x = np.zeros(n)
        for _ in range(int(rng.integers(1, 4))):
            tone = analog.sig_source_f(
                1.0, analog.GR_COS_WAVE, rng.uniform(0.05, 1) * bandwidth, 1.0
            )
            x += rng.uniform(0.3, 1.0) * run(tone, n_items=n, sink=blocks.vector_sink_f())
    x = x - x.mean()
    return x / np.max(np.abs(x))


def am_fm(label: str, rng: np.random.Generator, n: int, params: dict) -> tuple[np.ndarray, float]:
    n_message = n + SETTLE
    if label == "am":
        w = params["message_bandwidth"] = log_uniform(rng, 0.002, 0.1)
        depth = params["modulation_depth"] = float(rng.uniform(0.3, 1.0))
        x = message(rng, n_message, w, params)
        chain = (
            blocks.vector_source_f(x.tolist()),
            blocks.multiply_const_ff(depth),
            blocks.add_const_ff(1.0),
            blocks.float_to_complex(),
        )
        return run(*chain), 2 * w
    w = params["message_bandwidth"] = log_uniform(rng, 0.002, 0.05)
    deviation = params["deviation"] = float(rng.uniform(1.0, min(8.0, 0.38 / w - 1))) * w
    x = message(rng, n_message, w, params)
    mod = analog.frequency_modulator_fc(2 * np.pi * deviation)
    return run(blocks.vector_source_f(x.tolist()), mod), 2 * (deviation + w)


def ofdm(rng: np.random.Generator, n: int, params: dict) -> tuple[np.ndarray, float]:
    bandwidth = params["bandwidth"] = log_uniform(rng, 0.05, 0.76)
    rate = OFDM_SPAN / bandwidth
    # ofdm_tx offers BPSK, QPSK and 8PSK payloads
    bps = params["bits_per_subcarrier"] = int(rng.choice([2, 3]))
    packet = 96
    native = math.ceil((n + SETTLE) / rate) + 10 * 80
    n_packets = math.ceil(native / (packet * 8 / (48 * bps) * 80)) + 1
    chain = (
        random_bytes(rng, n_packets * packet),
        blocks.stream_to_tagged_stream(gr.sizeof_char, 1, packet, "len"),
        digital.ofdm_tx(fft_len=64, cp_len=16, packet_length_tag_key="len", bps_payload=bps),
        pfb.arb_resampler_ccf(rate),
    )
    return run(*chain), bandwidth


def transmit(label: str, rng: np.random.Generator, n: int, params: dict):
    if label in ("ook", "4ask", "bpsk", "qpsk", "8psk", "16qam", "64qam"):
        return linear(label, rng, n, params)
    if label in ("2fsk", "gfsk", "gmsk"):
        return fsk(label, rng, n, params)
    if label in ("am", "fm"):
        return am_fm(label, rng, n, params)
    return ofdm(rng, n, params)


def propagate(signal: np.ndarray, rng: np.random.Generator, params: dict) -> np.ndarray:
    cfo = params["cfo"] = float(rng.uniform(-0.1, 0.1))
    epsilon = params["epsilon"] = 1.0 + float(rng.uniform(-500e-6, 500e-6))
    n_taps = int(rng.integers(1, 5))
    taps = (rng.standard_normal(n_taps) + 1j * rng.standard_normal(n_taps)) * np.exp(
        -np.arange(n_taps) * rng.uniform(0.5, 2.0)
    )
    taps[0] = abs(taps[0]) + 1.0  # a dominant first path
    params["taps"] = [[float(t.real), float(t.imag)] for t in taps]
    chain = [blocks.vector_source_c(signal.tolist())]
    if rng.random() < 0.5:
        doppler = params["doppler"] = log_uniform(rng, 1e-5, 1e-3)
        delays = [0.0, *sorted(rng.uniform(0.2, 6.0, int(rng.integers(1, 3))).tolist())]
        mags = [1.0, *np.exp(-rng.uniform(0.5, 2.5, len(delays) - 1)).tolist()]
        los = bool(rng.random() < 0.5)
        params["fading"] = {"delays": delays, "mags": mags, "los": los}
        chain.append(
            channels.selective_fading_model(
                8, doppler, los, 4.0, int(rng.integers(1, 2**31)), delays, mags, 8
            )
        )
    chain.append(channels.channel_model(0.0, cfo, epsilon, taps.tolist(), 0, True))
    return run(*chain)


def signal_start(x: np.ndarray) -> int:
    """The first sample of the first block of START_BLOCK samples whose power reaches a tenth of
    the blocks' median: the modulators' filters emit silence until their delay has passed
    (an early test set kept up to three quarters of a 4,096-sample recording of it)."""
    usable = len(x) // START_BLOCK * START_BLOCK
    power = (np.abs(x[:usable]) ** 2).reshape(-1, START_BLOCK).mean(axis=1)
    return int(np.argmax(power >= 0.1 * np.median(power))) * START_BLOCK


def make_example(label: str, snr_db: float, n: int, rng: np.random.Generator):
    params: dict = {}
    if label == "noise":
        signal, bandwidth, power = np.zeros(n, dtype=np.complex64), 1.0, 1.0
    else:
        transmitted, bandwidth = transmit(label, rng, n + 2 * SETTLE, params)
        received = propagate(transmitted, rng, params)
        start = params["start"] = signal_start(transmitted) + SETTLE
        if len(received) < start + n:
            raise RuntimeError(f"{label}: GNU Radio gave {len(received)} samples, need {start + n}")
        signal = received[start : start + n]
        power = float(np.mean(np.abs(signal) ** 2))
        params["bandwidth"] = bandwidth
    noise_power = 1.0 if label == "noise" else power / 10 ** (snr_db / 10) / bandwidth
    noise = run(
        analog.noise_source_c(
            analog.GR_GAUSSIAN, math.sqrt(noise_power), int(rng.integers(1, 2**31))
        ),
        n_items=n,
    )
    level = 10 ** (rng.uniform(-60, 0) / 20)  # recordings come at any scale
    iq = (signal + noise).astype(np.complex128)
    iq *= level / np.sqrt(np.mean(np.abs(iq) ** 2))
    return iq.astype(np.complex64), params


def write_sigmf(path: Path, iq: np.ndarray, labels: list[str], snr: np.ndarray) -> None:
    n = iq.shape[1]
    iq.astype("<c8").tofile(path.with_suffix(".sigmf-data"))
    annotations = [
        {
            "core:sample_start": i * n,
            "core:sample_count": n,
            "core:label": label,
            "core:comment": "noise only" if math.isnan(s) else f"in-band SNR {s:g} dB",
        }
        for i, (label, s) in enumerate(zip(labels, snr.tolist(), strict=True))
    ]
    meta = {
        "global": {
            "core:datatype": "cf32_le",
            "core:sample_rate": 1.0,
            "core:version": "1.0.0",
            "core:description": "rfcls evaluation set made with GNU Radio "
            f"{gr.version()} blocks; one annotation per {n}-sample recording",
            "core:recorder": "rfmodel/data/gnuradio_reference.py",
        },
        "captures": [{"core:sample_start": 0}],
        "annotations": annotations,
    }
    path.with_suffix(".sigmf-meta").write_text(json.dumps(meta, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output path without extension")
    parser.add_argument("--per-cell", type=int, default=2, help="examples per class and SNR")
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--classes", default=",".join(CLASSES))
    args = parser.parse_args(argv)
    classes = args.classes.split(",")
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        parser.error(f"--classes: unknown {', '.join(unknown)}")
    if args.per_cell < 1 or args.samples < 1024:
        parser.error("--per-cell must be >= 1 and --samples >= 1024")

    rows, labels, snrs, all_params = [], [], [], []
    for label in classes:
        grid = [math.nan] if label == "noise" else SNR_VALUES
        for snr_db in grid:
            # noise gets as many recordings as any other class
            count = args.per_cell * (len(SNR_VALUES) if label == "noise" else 1)
            for j in range(count):
                snr_key = len(SNR_VALUES) if math.isnan(snr_db) else SNR_VALUES.index(snr_db)
                key = (CLASSES.index(label), snr_key, j)
                rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=key))
                iq, params = make_example(label, snr_db, args.samples, rng)
                rows.append(iq)
                labels.append(label)
                snrs.append(snr_db)
                all_params.append(json.dumps(params))
        print(f"{label}: done", file=sys.stderr)
    iq = np.stack(rows)
    snr = np.asarray(snrs, dtype=np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out.with_suffix(".npz"),
        iq=iq,
        label=np.asarray(labels),
        snr_db=snr,
        params=np.asarray(all_params),
        gnuradio_version=np.asarray(gr.version()),
    )
    write_sigmf(args.out, iq, labels, snr)
    print(f"{len(iq)} recordings -> {args.out.with_suffix('.npz')} and SigMF", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
