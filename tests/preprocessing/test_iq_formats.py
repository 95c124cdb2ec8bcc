import json
from io import BytesIO

import numpy as np
import pytest
import sigmf
from sigmf import SigMFFile

from preprocessing.errors import InvalidFormat, InvalidSamples
from preprocessing.formats import (
    FORMATS,
    SIGMF_DATATYPES,
    decode,
    encode,
    from_iq_lists,
    open_sigmf,
    read_sigmf,
    write_sigmf,
)

RNG = np.random.default_rng(20240601)

# format -> (numpy component type, expected float value of each component)
INTEGER_FORMATS = {
    "ci16": (np.int16, lambda v: v / 32768.0),
    "ci8": (np.int8, lambda v: v / 128.0),
    "cu8": (np.uint8, lambda v: (v - 128.0) / 128.0),
}


def random_components(dtype, n):
    info = np.iinfo(dtype)
    values = RNG.integers(info.min, info.max, size=2 * n, endpoint=True).astype(dtype)
    values[:2] = [info.min, info.max]  # the extremes of the range, always
    return values


def random_iq(n):
    """Inside every format's range, so only rounding separates encode/decode from identity."""
    i, q = RNG.uniform(-0.99, 0.99, size=(2, n))
    return (i + 1j * q).astype(np.complex64)


def test_cf32_decodes_interleaved_float32():
    components = RNG.standard_normal(2 * 1000).astype("<f4")
    iq = decode(components.tobytes(), "cf32")
    assert iq.dtype == np.complex64
    np.testing.assert_array_equal(iq.real, components[0::2])
    np.testing.assert_array_equal(iq.imag, components[1::2])
    assert encode(iq, "cf32") == components.tobytes()


@pytest.mark.parametrize("fmt", sorted(INTEGER_FORMATS))
def test_integer_formats_scale_into_unit_range(fmt):
    dtype, expected = INTEGER_FORMATS[fmt]
    components = random_components(dtype, 999)
    iq = decode(components.tobytes(), fmt)
    assert iq.dtype == np.complex64
    np.testing.assert_array_equal(iq.real, expected(components[0::2].astype(np.float64)))
    np.testing.assert_array_equal(iq.imag, expected(components[1::2].astype(np.float64)))
    assert iq.real.min() == -1.0 and iq.real.max() < 1.0
    # every code is exactly representable, so encoding is the exact inverse
    assert encode(iq, fmt) == components.tobytes()


@pytest.mark.parametrize("fmt", sorted(INTEGER_FORMATS))
def test_encode_rounds_and_clips(fmt):
    dtype, _ = INTEGER_FORMATS[fmt]
    info = np.iinfo(dtype)
    iq = np.array([3 + -3j, 0.0 + 0.0j], dtype=np.complex64)
    codes = np.frombuffer(encode(iq, fmt), dtype=dtype)
    zero = 128 if fmt == "cu8" else 0
    assert codes.tolist() == [info.max, info.min, zero, zero]
    x = random_iq(500)
    step = 1 / 32768 if fmt == "ci16" else 1 / 128
    err = np.abs(decode(encode(x, fmt), fmt) - x)
    assert err.max() <= step * np.sqrt(2) / 2 + 1e-7


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("extra", [1, 3])
def test_misaligned_byte_count_names_format_and_count(fmt, extra):
    size = FORMATS[fmt].sample_bytes
    n_bytes = 10 * size + extra if extra < size else 10 * size + 1
    with pytest.raises(InvalidFormat) as err:
        decode(bytes(n_bytes), fmt)
    assert err.value.field == "format"
    assert str(n_bytes) in err.value.message and fmt in err.value.message


def test_unknown_format_lists_valid_names():
    with pytest.raises(InvalidFormat) as err:
        decode(bytes(8), "cf64")
    assert err.value.field == "format"
    for name in FORMATS:
        assert name in err.value.message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_cf32_rejects_non_finite(bad):
    components = RNG.standard_normal(20).astype("<f4")
    components[7] = bad
    with pytest.raises(InvalidSamples) as err:
        decode(components.tobytes(), "cf32")
    assert err.value.field == "samples" and "index 3" in err.value.message


def test_encode_rejects_non_finite():
    with pytest.raises(InvalidSamples):
        encode(np.array([1, np.nan], dtype=np.complex64), "ci16")


def test_iq_lists():
    i, q = RNG.standard_normal(50), RNG.standard_normal(50)
    iq = from_iq_lists(i.tolist(), q.tolist())
    assert iq.dtype == np.complex64
    np.testing.assert_array_equal(iq, (i + 1j * q).astype(np.complex64))


@pytest.mark.parametrize(
    ("i", "q", "error", "field"),
    [
        ([1.0, 2.0], [1.0], InvalidFormat, "q"),
        (["a", 2.0], [1.0, 2.0], InvalidFormat, "i"),
        ([[1.0, 2.0]], [[1.0, 2.0]], InvalidFormat, "i"),
        ([1.0, 2.0], [1.0, None], InvalidFormat, "q"),
        ([True, False], [1.0, 2.0], InvalidFormat, "i"),
        ([[1.0], [1.0, 2.0]], [1.0, 2.0], InvalidFormat, "i"),
        ([1.0, float("nan")], [1.0, 2.0], InvalidSamples, "i"),
        ([1.0, 2.0], [float("inf"), 2.0], InvalidSamples, "q"),
    ],
)
def test_iq_lists_errors_name_the_field(i, q, error, field):
    with pytest.raises(error) as err:
        from_iq_lists(i, q)
    assert err.value.field == field


@pytest.mark.parametrize("datatype", sorted(SIGMF_DATATYPES))
def test_sigmf_round_trip(tmp_path, datatype):
    x = random_iq(4000)
    meta_path = write_sigmf(tmp_path / "rec", x, 2.4e6, 433.92e6, datatype)
    assert meta_path.name == "rec.sigmf-meta"
    expected = decode(encode(x, SIGMF_DATATYPES[datatype]), SIGMF_DATATYPES[datatype])
    for path in (meta_path, tmp_path / "rec.sigmf-data", tmp_path / "rec"):
        rec = read_sigmf(path)
        assert rec.datatype == datatype
        assert rec.sample_rate == 2.4e6 and rec.center_freq == 433.92e6
        assert rec.samples.dtype == np.complex64
        np.testing.assert_array_equal(rec.samples, expected)


def test_sigmf_archive_and_missing_frequency(tmp_path):
    x = random_iq(100)
    path = write_sigmf(tmp_path / "rec.sigmf", x, 1e6)
    rec = read_sigmf(path)
    assert rec.center_freq is None and rec.sample_rate == 1e6
    np.testing.assert_array_equal(rec.samples, x)


@pytest.mark.parametrize("datatype", sorted(SIGMF_DATATYPES))
def test_reads_sigmf_written_by_the_sigmf_package(tmp_path, datatype):
    """Data written by numpy, metadata by sigmf itself; our scaling must equal decode()'s."""
    fmt = SIGMF_DATATYPES[datatype]
    if fmt == "cf32":
        components = RNG.standard_normal(2 * 300).astype("<f4")
    else:
        components = random_components(INTEGER_FORMATS[fmt][0], 300)
    data_path = tmp_path / "ext.sigmf-data"
    components.tofile(data_path)
    meta = SigMFFile(
        data_file=data_path,
        global_info={
            sigmf.DATATYPE_KEY: datatype,
            sigmf.SAMPLE_RATE_KEY: 48000.0,
            sigmf.DESCRIPTION_KEY: "written by the sigmf package",
        },
    )
    meta.add_capture(0, metadata={sigmf.FREQUENCY_KEY: 1.0e9})
    meta.add_annotation(0, 300, metadata={sigmf.LABEL_KEY: "noise"})
    meta.tofile(tmp_path / "ext")
    rec = read_sigmf(tmp_path / "ext.sigmf-meta")
    assert (rec.sample_rate, rec.center_freq, rec.datatype) == (48000.0, 1.0e9, datatype)
    np.testing.assert_array_equal(rec.samples, decode(components.tobytes(), fmt))


def rewrite_meta(path, **global_fields):
    meta = json.loads(path.read_text())
    meta["global"].update(global_fields)
    meta["global"].pop("core:sha512", None)
    path.write_text(json.dumps(meta))


def test_sigmf_unsupported_datatype(tmp_path):
    meta_path = write_sigmf(tmp_path / "rec", random_iq(64), 1e6, datatype="ci16_le")
    rewrite_meta(meta_path, **{"core:datatype": "ri16_le"})
    with pytest.raises(InvalidFormat) as err:
        read_sigmf(meta_path)
    assert err.value.field == "datatype"
    assert "ri16_le" in err.value.message and "cf32_le" in err.value.message


def test_sigmf_multichannel_refused(tmp_path):
    meta_path = write_sigmf(tmp_path / "rec", random_iq(64), 1e6)
    rewrite_meta(meta_path, **{"core:num_channels": 2})
    with pytest.raises(InvalidFormat) as err:
        read_sigmf(meta_path)
    assert err.value.field == "num_channels"


def test_cf32_refuses_values_past_float32():
    with pytest.raises(InvalidSamples) as err:
        encode(np.array([1e39 + 0j, 1 + 1j]), "cf32")
    assert err.value.field == "samples"


def write_captures(tmp_path, data: bytes, captures: list[dict]) -> object:
    """A cf32 recording whose captures are given as they stand in the metadata."""
    (tmp_path / "rec.sigmf-data").write_bytes(data)
    meta = {
        "global": {"core:version": "1.0.0", "core:datatype": "cf32_le", "core:sample_rate": 1e6},
        "captures": captures,
        "annotations": [],
    }
    path = tmp_path / "rec.sigmf-meta"
    path.write_text(json.dumps(meta))
    return path


def test_sigmf_header_bytes_are_skipped_not_read_as_samples(tmp_path):
    """A non-conforming dataset: each capture's core:header_bytes precede its samples."""
    first, second = random_iq(40), random_iq(24)
    header = RNG.standard_normal(4).astype("<f4").tobytes()  # 16 bytes, 2 plausible samples
    data = header + encode(first, "cf32") + header + encode(second, "cf32")
    captures = [
        {"core:sample_start": 0, "core:header_bytes": 16, "core:frequency": 9e8},
        {"core:sample_start": 40, "core:header_bytes": 16, "core:frequency": 9e8},
    ]
    rec = read_sigmf(write_captures(tmp_path, data, captures))
    np.testing.assert_array_equal(rec.samples, np.concatenate([first, second]))
    assert rec.center_freq == 9e8


def test_sigmf_non_conforming_dataset_skips_its_header_once(tmp_path):
    """core:dataset names a file of another format; its first capture's header_bytes come first."""
    x = random_iq(48)
    (tmp_path / "capture.bin").write_bytes(b"HDR!" + encode(x, "cf32") + b"TAIL")
    meta = {
        "global": {
            "core:version": "1.0.0",
            "core:datatype": "cf32_le",
            "core:sample_rate": 1e6,
            "core:dataset": "capture.bin",
            "core:trailing_bytes": 4,
        },
        "captures": [{"core:sample_start": 0, "core:header_bytes": 4}],
        "annotations": [],
    }
    (tmp_path / "capture.sigmf-meta").write_text(json.dumps(meta))
    np.testing.assert_array_equal(read_sigmf(tmp_path / "capture.sigmf-meta").samples, x)


@pytest.mark.parametrize("archive", [False, True])
def test_sigmf_sample_indices_count_from_core_offset(tmp_path, archive):
    """The second file of a recording split over files: core:offset is the index of its first
    sample, and sample_start is absolute (sigmf's own writer requires start >= offset)."""
    first, second = random_iq(40), random_iq(24)
    meta = SigMFFile(
        global_info={sigmf.DATATYPE_KEY: "cf32_le", sigmf.SAMPLE_RATE_KEY: 1e6, "core:offset": 1000}
    )
    meta.set_data_file(data_buffer=BytesIO(encode(np.concatenate([first, second]), "cf32")))
    meta.add_capture(1000, metadata={sigmf.FREQUENCY_KEY: 9e8})
    meta.add_capture(1040, metadata={sigmf.FREQUENCY_KEY: 9e8})
    path = tmp_path / ("rec.sigmf" if archive else "rec")
    meta.tofile(path, toarchive=archive)
    rec = read_sigmf(path if archive else tmp_path / "rec.sigmf-meta")
    np.testing.assert_array_equal(rec.samples, np.concatenate([first, second]))


@pytest.mark.parametrize(
    ("captures", "field"),
    [
        ([{"core:sample_start": -4}], "sample_start"),
        ([{"core:sample_start": 0, "core:header_bytes": -8}], "header_bytes"),
        ([{"core:sample_start": 1.5}], "sample_start"),
        ([{"core:sample_start": True}], "sample_start"),
    ],
    ids=["negative start", "negative header", "fractional start", "boolean start"],
)
def test_sigmf_capture_positions_must_be_whole_numbers(tmp_path, captures, field):
    path = write_captures(tmp_path, encode(random_iq(64), "cf32"), captures)
    with pytest.raises(InvalidFormat) as err:
        read_sigmf(path)
    assert err.value.field == field and "core:" + field in err.value.message


def test_sigmf_without_its_data_file_says_so(tmp_path):
    meta_path = write_sigmf(tmp_path / "rec", random_iq(64), 1e6)
    (tmp_path / "rec.sigmf-data").unlink()
    with pytest.raises(InvalidFormat) as err:
        read_sigmf(meta_path)
    assert err.value.field == "sigmf-data" and "no data file" in err.value.message


def test_sigmf_with_an_empty_data_file_says_so(tmp_path):
    meta_path = write_sigmf(tmp_path / "rec", random_iq(64), 1e6)
    (tmp_path / "rec.sigmf-data").write_bytes(b"")
    for path in (meta_path, tmp_path / "rec.sigmf-data", tmp_path / "rec"):
        with pytest.raises(InvalidFormat) as err:
            read_sigmf(path)
        assert err.value.field == "sigmf-data" and "holds no samples" in err.value.message


def test_a_sigmf_stream_reads_the_captures_a_piece_at_a_time(tmp_path):
    """What rfcls classify sends a request at a time: pieces that cross the captures' headers
    add up to the recording's samples, in its own format."""
    first, second = random_iq(40), random_iq(24)
    header = b"H" * 16
    data = header + encode(first, "cf32") + header + encode(second, "cf32")
    captures = [
        {"core:sample_start": 0, "core:header_bytes": 16},
        {"core:sample_start": 40, "core:header_bytes": 16},
    ]
    stream = open_sigmf(write_captures(tmp_path, data, captures))
    assert (stream.fmt, stream.n_samples) == ("cf32", 64)
    pieces = iter(lambda: stream.read(7 * 8), b"")
    np.testing.assert_array_equal(decode(b"".join(pieces), "cf32"), np.concatenate([first, second]))
    stream.close()


@pytest.mark.parametrize(
    ("captures", "wanted"),
    [
        (
            [
                {"core:sample_start": 0, "core:frequency": 1e9},
                {"core:sample_start": 32, "core:frequency": 2e9},
            ],
            "at 2 frequencies",
        ),
        ([{"core:sample_start": 32}, {"core:sample_start": 0}], "not in order"),
        ([{"core:sample_start": 0, "core:header_bytes": 4096}], "not a whole number"),
        ([{"core:sample_start": 0}, {"core:sample_start": 4096}], "not a whole number"),
    ],
    ids=["retuned", "out of order", "header past the data", "capture past the data"],
)
def test_sigmf_captures_that_are_not_one_recording_are_refused(tmp_path, captures, wanted):
    path = write_captures(tmp_path, encode(random_iq(64), "cf32"), captures)
    with pytest.raises(InvalidFormat) as err:
        read_sigmf(path)
    assert err.value.field in ("captures", "sigmf-data") and wanted in err.value.message


@pytest.mark.parametrize("rate", [0, -5.0, "fast", True])
def test_sigmf_sample_rate_must_be_a_positive_number(tmp_path, rate):
    meta_path = write_sigmf(tmp_path / "rec", random_iq(64), 1e6)
    rewrite_meta(meta_path, **{"core:sample_rate": rate})
    with pytest.raises(InvalidFormat) as err:
        read_sigmf(meta_path)
    assert err.value.field == "sample_rate"


def test_sigmf_write_refuses_unknown_datatype(tmp_path):
    with pytest.raises(InvalidFormat) as err:
        write_sigmf(tmp_path / "rec", random_iq(8), 1e6, datatype="cf64_le")
    assert err.value.field == "datatype"


def test_sigmf_missing_file(tmp_path):
    with pytest.raises(InvalidFormat) as err:
        read_sigmf(tmp_path / "absent.sigmf-meta")
    assert err.value.field == "sigmf"
