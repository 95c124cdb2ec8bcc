"""Raw IQ sample formats in and out: interleaved binary (cf32, ci16, ci8, cu8), JSON-style I/Q
lists, and SigMF recordings.

Every decoder returns a 1-D np.complex64 array. Integer formats are scaled into [-1, 1) by the
largest power of two their range holds, exactly as the SigMF library's autoscale does, so a ci16
file reads the same through `decode` and through `read_sigmf`:

    ci16: v / 32768          ci8: v / 128          cu8: (v - 128) / 128

cu8 (RTL-SDR) is offset binary whose true zero lies at 127.5; we subtract 128, not 127.5, to
keep the range [-1, 1), to keep 0.0 exactly representable (it encodes to 128) and to agree with
SigMF's autoscale. The price is a DC offset of 0.5 LSB (1/256 of full scale) on both I and Q.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import numpy as np
import sigmf
from sigmf import SigMFFile, sigmffile
from sigmf.error import SigMFError

from preprocessing.errors import InputError, InvalidFormat, InvalidSamples


@dataclass(frozen=True)
class SampleFormat:
    """One interleaved I/Q format: the numpy type of one component and its scaling to [-1, 1)."""

    name: str
    component: np.dtype
    scale: float  # float value = (integer - offset) * scale
    offset: float

    @property
    def sample_bytes(self) -> int:
        return 2 * self.component.itemsize


FORMATS: dict[str, SampleFormat] = {
    "cf32": SampleFormat("cf32", np.dtype("<f4"), 1.0, 0.0),
    "ci16": SampleFormat("ci16", np.dtype("<i2"), 1.0 / 32768, 0.0),
    "ci8": SampleFormat("ci8", np.dtype("i1"), 1.0 / 128, 0.0),
    "cu8": SampleFormat("cu8", np.dtype("u1"), 1.0 / 128, 128.0),
}

# SigMF `core:datatype` -> our format name (8-bit types carry no endianness in SigMF).
SIGMF_DATATYPES: dict[str, str] = {"cf32_le": "cf32", "ci16_le": "ci16", "ci8": "ci8", "cu8": "cu8"}


FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Recording:
    samples: np.ndarray  # [N] complex64
    sample_rate: float | None
    center_freq: float | None
    datatype: str  # SigMF name, e.g. "ci16_le"


def sample_format(fmt: str) -> SampleFormat:
    try:
        return FORMATS[fmt]
    except (KeyError, TypeError):
        raise InvalidFormat(
            "format", f"unknown sample format {fmt!r}; valid formats: {', '.join(FORMATS)}"
        ) from None


def decode(data: bytes | bytearray | memoryview, fmt: str) -> np.ndarray:
    """Interleaved little-endian I/Q bytes -> [N] complex64."""
    spec = sample_format(fmt)
    n_bytes = len(memoryview(data).cast("B"))
    if n_bytes % spec.sample_bytes:
        raise InvalidFormat(
            "format",
            f"{n_bytes} bytes is not a whole number of {fmt} samples "
            f"({spec.sample_bytes} bytes each: I and Q of {spec.component.itemsize})",
        )
    components = np.frombuffer(data, dtype=spec.component)
    if fmt == "cf32":
        # astype copies: the result is writable and does not pin the caller's buffer
        iq = components.view("<c8").astype(np.complex64)
        check_finite(iq)
        return iq
    values = components.astype(np.float32)
    if spec.offset:
        values -= np.float32(spec.offset)
    values *= np.float32(spec.scale)
    return values.view(np.complex64)


def encode(iq: np.ndarray, fmt: str) -> bytes:
    """[N] complex -> interleaved little-endian bytes; integer formats round and clip."""
    spec = sample_format(fmt)
    iq = np.asarray(iq)
    if iq.ndim != 1:
        raise InvalidFormat("samples", f"must be one-dimensional, got shape {iq.shape}")
    check_finite(iq)
    components = np.empty(2 * iq.size, dtype=np.float64)
    components[0::2] = iq.real
    components[1::2] = iq.imag
    if fmt == "cf32":
        with np.errstate(over="ignore"):  # refused below, by name, not warned about
            narrowed = components.astype(spec.component)
        if not np.isfinite(narrowed).all():
            raise InvalidSamples(
                "samples", f"values beyond +-{FLOAT32_MAX:.4g} do not fit in float32"
            )
        return narrowed.tobytes()
    info = np.iinfo(spec.component)
    levels = np.rint(components / spec.scale + spec.offset)
    return np.clip(levels, info.min, info.max).astype(spec.component).tobytes()


def from_iq_lists(i: Sequence[float], q: Sequence[float]) -> np.ndarray:
    """Separate lists of I and Q values (e.g. from JSON) -> [N] complex64."""
    parts = []
    for name, values in (("i", i), ("q", q)):
        try:
            arr = np.asarray(values)
        except (TypeError, ValueError):  # ragged nesting
            raise InvalidFormat(name, "must be a flat list of numbers") from None
        # kind i/u/f only: None would pass as NaN (object dtype), True as 1.0 (bool)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iuf"):
            raise InvalidFormat(
                name, f"must be a flat list of numbers, got {arr.dtype} of shape {arr.shape}"
            )
        parts.append(arr)
    if parts[0].size != parts[1].size:
        raise InvalidFormat("q", f"has {parts[1].size} values but i has {parts[0].size}")
    for name, arr in zip(("i", "q"), parts, strict=True):
        check_float32(arr, field=name)
    iq = np.empty(parts[0].size, dtype=np.complex64)
    iq.real = parts[0]
    iq.imag = parts[1]
    return iq


def check_finite(values: np.ndarray, field: str = "samples") -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InvalidSamples(
            field, f"{int(bad.sum())} values are NaN or infinite (the first at index {first})"
        )


def check_float32(values: np.ndarray, field: str) -> None:
    """Values that float32 holds: finite, and none so large that, finite as float64, it turns
    infinite once stored as float32."""
    check_finite(values, field)
    if values.size and np.abs(values).max() > FLOAT32_MAX:
        raise InvalidSamples(field, f"values beyond +-{FLOAT32_MAX:.4g} do not fit in float32")


# The sigmf library checks its schema only when asked to; malformed metadata surfaces as whatever
# its parser trips over (JSONDecodeError and UnicodeDecodeError are ValueErrors).
SIGMF_READ_ERRORS = (SigMFError, ValueError, TypeError, KeyError, AttributeError, IndexError)


SIGMF_SUFFIXES = (".sigmf-meta", ".sigmf-data", ".sigmf")


def is_sigmf_path(path: Path) -> bool:
    """A SigMF file by its suffix, or the base name of a .sigmf-meta beside it."""
    return path.suffix in SIGMF_SUFFIXES or path.with_name(path.name + ".sigmf-meta").is_file()


RAW_EXTENSIONS = {
    ".cf32": "cf32",
    ".cfile": "cf32",
    ".fc32": "cf32",
    ".ci16": "ci16",
    ".cs16": "ci16",
    ".sc16": "ci16",
    ".ci8": "ci8",
    ".cs8": "ci8",
    ".cu8": "cu8",
}


def raw_file_format(path: Path, fmt: str | None) -> str | None:
    """The sample format of a raw interleaved IQ file: `fmt` if given, else from its extension
    (the names GNU Radio, SoapySDR, rtl_sdr and HackRF tools write). None for a SigMF
    recording, which names its own datatype; a `fmt` for one is refused, as its metadata would
    otherwise be read as samples."""
    if is_sigmf_path(path):
        if fmt is not None:
            raise InvalidFormat("format", "a SigMF recording names its own datatype; drop --format")
        return None
    fmt = fmt or RAW_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidFormat(
            "format",
            f"cannot tell the sample format of {path.name} from its extension; "
            f"pass --format ({', '.join(FORMATS)})",
        )
    return fmt


def read_sigmf(path: str | Path) -> Recording:
    """Read a single-channel SigMF recording: a .sigmf-meta or .sigmf-data path, their common base
    name, or a .sigmf archive. The data type comes from the metadata."""
    stream = open_sigmf(path)
    try:
        samples = decode(stream.read(), stream.fmt)
    finally:
        stream.close()
    return Recording(samples, stream.sample_rate, stream.center_freq, stream.datatype)


@dataclass
class SigmfStream:
    """A SigMF recording opened for reading: its samples' bytes in `fmt`, capture after capture,
    read as asked for (`read`, as a file's), and what its metadata says."""

    source: BinaryIO  # the dataset file, or the archive's member inflated into memory
    ranges: list[tuple[int, int]]  # the captures' sample bytes in source not yet read
    fmt: str
    n_samples: int
    datatype: str
    sample_rate: float | None
    center_freq: float | None

    def read(self, size: int = -1) -> bytes:
        pieces = []
        while self.ranges and size:
            first, stop = self.ranges[0]
            n = stop - first if size < 0 else min(size, stop - first)
            self.source.seek(first)
            piece = self.source.read(n)
            if len(piece) < n:
                raise InvalidFormat("sigmf-data", "the data file ended before its last capture")
            pieces.append(piece)
            size -= n if size > 0 else 0
            self.ranges[0] = (first + n, stop)
            if first + n == stop:
                self.ranges.pop(0)
        return b"".join(pieces)

    def close(self) -> None:
        self.source.close()


def open_sigmf(path: str | Path) -> SigmfStream:
    """Open a single-channel SigMF recording (as read_sigmf takes it) for reading its samples a
    piece at a time."""
    try:
        return _open_sigmf(path)
    except InputError:
        raise
    except SIGMF_READ_ERRORS as exc:
        raise InvalidFormat("sigmf", f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def _open_sigmf(path: str | Path) -> SigmfStream:
    data_file = sigmffile.get_sigmf_filenames(path)["data_fn"]
    if Path(path).suffix != ".sigmf" and data_file.is_file() and not data_file.stat().st_size:
        # sigmf's own error for it is numpy's "cannot mmap an empty file"
        raise InvalidFormat("sigmf-data", f"{data_file} is empty: the recording holds no samples")
    meta = sigmffile.fromfile(str(path))
    if not isinstance(meta, SigMFFile):
        raise InvalidFormat("sigmf", f"{path} is a SigMF collection, not a single recording")
    datatype = meta.get_global_field(sigmf.DATATYPE_KEY)
    if not isinstance(datatype, str) or datatype not in SIGMF_DATATYPES:
        raise InvalidFormat(
            "datatype",
            f"SigMF datatype {datatype!r} is not supported; "
            f"supported: {', '.join(SIGMF_DATATYPES)}",
        )
    channels = meta.get_global_field(sigmf.NUM_CHANNELS_KEY, 1)
    if channels != 1:
        raise InvalidFormat("num_channels", f"{path} has {channels} channels; only 1 is supported")
    fmt = SIGMF_DATATYPES[datatype]
    captures = meta.get_captures()
    center_freq = captures[0].get(sigmf.FREQUENCY_KEY) if captures else None
    sample_rate = _metadata_number(
        meta.get_global_field(sigmf.SAMPLE_RATE_KEY), "sample_rate", positive=True
    )
    center_freq = _metadata_number(center_freq, "frequency")
    source, ranges = _capture_ranges(meta, fmt)
    n_samples = sum(stop - first for first, stop in ranges) // FORMATS[fmt].sample_bytes
    return SigmfStream(source, ranges, fmt, n_samples, datatype, sample_rate, center_freq)


def _capture_ranges(meta: SigMFFile, fmt: str) -> tuple[BinaryIO, list[tuple[int, int]]]:
    """The dataset, opened, and where each capture's samples lie in it. The byte ranges are
    worked out here, not by sigmf (1.14), which skips a non-conforming dataset's first
    core:header_bytes twice and reads core:sample_start as a position in the file, where SigMF
    makes it absolute (core:offset is the index of the dataset's first sample). Each capture's
    core:header_bytes precede its samples and core:trailing_bytes end the dataset. One recording
    is one tuning: captures at different frequencies are refused, not joined."""
    size = sample_format(fmt).sample_bytes
    first_index = _metadata_count(meta.get_global_field(sigmf.OFFSET_KEY, 0), "offset")
    trailing = _metadata_count(meta.get_global_field(sigmf.TRAILING_BYTES_KEY, 0), "trailing_bytes")
    captures = meta.get_captures() or [{sigmf.SAMPLE_START_KEY: first_index}]
    starts = [_metadata_count(c.get(sigmf.SAMPLE_START_KEY), "sample_start") for c in captures]
    headers = [_metadata_count(c.get(sigmf.HEADER_BYTES_KEY, 0), "header_bytes") for c in captures]
    if starts != sorted(starts) or starts[0] < first_index:
        raise InvalidFormat(
            "captures",
            f"not in order of core:sample_start from core:offset {first_index} ({starts})",
        )
    frequencies = {c.get(sigmf.FREQUENCY_KEY) for c in captures}
    if len(frequencies) > 1:
        raise InvalidFormat(
            "captures",
            f"at {len(frequencies)} frequencies ({', '.join(map(str, frequencies))}); "
            "classify each capture as a recording of its own",
        )
    # sigmf's data offset points past a non-conforming dataset's first header
    skipped = headers[0] if meta.get_global_field(sigmf.DATASET_KEY) else 0
    source, base, length = _dataset(meta, skipped, trailing)
    end = length - trailing
    ranges = []
    header_total = 0
    for index, start in enumerate(starts):
        header_total += headers[index]
        first = header_total + (start - first_index) * size
        last = index + 1 == len(starts)
        stop = end if last else header_total + (starts[index + 1] - first_index) * size
        if not first <= stop <= end or (stop - first) % size:
            source.close()
            raise InvalidFormat(
                "sigmf-data",
                f"capture {index} spans bytes {first} to {stop} of the data's {end}: not a whole "
                f"number of {size}-byte samples (core:header_bytes, or a truncated file)",
            )
        ranges.append((base + first, base + stop))
    return source, ranges


def _dataset(meta: SigMFFile, skipped: int, trailing: int) -> tuple[BinaryIO, int, int]:
    """The dataset file opened, where it starts in what was opened and its length, headers and
    trailer included: sigmf points `skipped` bytes into it (into an uncompressed archive, at its
    member; a compressed archive's member it has inflated into memory)."""
    start = getattr(meta, "data_offset", 0) - skipped
    stored = getattr(meta, "data_size_bytes", None)
    if meta.data_buffer is not None:
        source = meta.data_buffer
        available = len(source.getbuffer()) - start
    elif meta.data_file is not None and Path(meta.data_file).is_file():
        source = open(meta.data_file, "rb")  # noqa: SIM115 (the stream's to close)
        available = Path(meta.data_file).stat().st_size - start
    else:
        raise InvalidFormat(
            "sigmf-data",
            "the recording has no data file (core:dataset, or a .sigmf-data beside the metadata)",
        )
    length = available if stored is None else min(available, stored + skipped + trailing)
    return source, start, length


def _metadata_count(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidFormat(field, f"SigMF core:{field} {value!r} is not a whole number >= 0")
    return value


def _metadata_number(value: object, field: str, positive: bool = False) -> float | None:
    if value is None:
        return None
    number = (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    )
    if number is None or not np.isfinite(number) or (positive and number <= 0):
        wanted = "a positive finite number" if positive else "a finite number"
        raise InvalidFormat(field, f"SigMF {field} {value!r} is not {wanted}")
    return number


def write_sigmf(
    path: str | Path,
    samples: np.ndarray,
    sample_rate: float,
    center_freq: float | None = None,
    datatype: str = "cf32_le",
) -> Path:
    """Write `path`.sigmf-meta and `path`.sigmf-data (or an archive if `path` ends in .sigmf).
    Returns the metadata (or archive) path."""
    if datatype not in SIGMF_DATATYPES:
        raise InvalidFormat(
            "datatype",
            f"cannot write SigMF datatype {datatype!r}; supported: {', '.join(SIGMF_DATATYPES)}",
        )
    data = encode(samples, SIGMF_DATATYPES[datatype])
    meta = SigMFFile(
        global_info={
            sigmf.DATATYPE_KEY: datatype,
            sigmf.SAMPLE_RATE_KEY: float(sample_rate),
        }
    )
    meta.set_data_file(data_buffer=BytesIO(data))
    capture = {} if center_freq is None else {sigmf.FREQUENCY_KEY: float(center_freq)}
    meta.add_capture(0, metadata=capture)
    names = sigmffile.get_sigmf_filenames(path)
    archive = Path(path).suffix == ".sigmf"
    target = names["archive_fn"] if archive else names["base_fn"]
    meta.tofile(target, overwrite=True)
    return target if archive else names["meta_fn"]
