"""Pixel formats → the station layout (uint8 HxW mono, uint8 HxWx3 RGB), against known patterns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from station.camera.pixels import FORMATS, PixelFormatError, pack, to_station_image, unpack

W, H = 8, 6


def test_every_listed_format_is_supported():
    listed = {"Mono8", "Mono10", "Mono12", "Mono16", "BayerRG8", "BayerGR8", "BayerGB8", "BayerBG8",
              "RGB8", "BGR8", "RGBa8"}
    assert listed <= set(FORMATS)


def test_mono8_is_the_bytes_in_row_order():
    payload = bytes(range(W * H))
    img = to_station_image(payload, W, H, "Mono8")
    assert img.dtype == np.uint8 and img.shape == (H, W)
    assert img[0, 0] == 0 and img[0, W - 1] == W - 1 and img[1, 0] == W and img[H - 1, W - 1] == W * H - 1


@pytest.mark.parametrize(
    "fmt, word_bytes, native, scaled",
    [
        ("Mono10", b"\xff\x03", 1023, 255),  # little-endian 0x03ff, full scale
        ("Mono10", b"\x00\x02", 512, 128),
        ("Mono10", b"\x03\x00", 3, 0),
        ("Mono12", b"\xff\x0f", 4095, 255),
        ("Mono12", b"\x00\x08", 2048, 128),
        ("Mono12", b"\x10\x00", 16, 1),
        ("Mono16", b"\xff\xff", 65535, 255),
        ("Mono16", b"\x00\x01", 256, 1),
        ("Mono16", b"\xff\x00", 255, 0),
    ],
)
def test_wide_mono_keeps_native_values_and_scales_by_dropping_low_bits(fmt, word_bytes, native, scaled):
    payload = word_bytes * (W * H)
    wide = unpack(payload, W, H, fmt, native_depth=True)
    assert wide.dtype == np.uint16 and wide.shape == (H, W)
    assert (wide == native).all()
    img = to_station_image(payload, W, H, fmt)
    assert img.dtype == np.uint8 and img.shape == (H, W)
    assert (img == scaled).all()


def test_mono12_ramp_keeps_its_position():
    ramp = (np.arange(W * H, dtype=np.uint16) * 85).reshape(H, W)  # 0..4015, under 4096
    img = unpack(pack(ramp, "Mono12"), W, H, "Mono12", native_depth=True)
    assert np.array_equal(img, ramp)
    assert np.array_equal(to_station_image(pack(ramp, "Mono12"), W, H, "Mono12"), (ramp >> 4).astype(np.uint8))


def test_rgb8_bgr8_rgba8_come_out_rgb():
    # a known pixel: pure orange (R 250, G 120, B 10) at (row 2, col 3), black elsewhere
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[2, 3] = (250, 120, 10)
    bgr_bytes = rgb[:, :, ::-1].tobytes()
    rgba_bytes = np.concatenate([rgb, np.full((H, W, 1), 77, np.uint8)], axis=2).tobytes()
    for fmt, payload in [("RGB8", rgb.tobytes()), ("BGR8", bgr_bytes), ("RGBa8", rgba_bytes)]:
        img = to_station_image(payload, W, H, fmt)
        assert img.dtype == np.uint8 and img.shape == (H, W, 3), fmt
        assert tuple(img[2, 3]) == (250, 120, 10), fmt
        assert img.sum() == 250 + 120 + 10, fmt


@pytest.mark.parametrize("fmt, top_left", [("BayerRG8", "RG/GB"), ("BayerGR8", "GR/BG"),
                                           ("BayerGB8", "GB/RG"), ("BayerBG8", "BG/GR")])
@pytest.mark.parametrize("colour", [(200, 0, 0), (0, 200, 0), (0, 0, 200), (180, 90, 30)])
def test_bayer_flat_colour_demosaics_to_that_colour(fmt, top_left, colour):
    # hand-built mosaic from the pattern's top-left cell, not from pack(): the test pins the naming
    value = dict(zip("RGB", colour))
    rows = top_left.split("/")
    mosaic = np.empty((16, 16), np.uint8)
    for dy in range(2):
        for dx in range(2):
            mosaic[dy::2, dx::2] = value[rows[dy][dx]]
    img = to_station_image(mosaic.tobytes(), 16, 16, fmt)
    assert img.dtype == np.uint8 and img.shape == (16, 16, 3)
    inner = img[2:-2, 2:-2].reshape(-1, 3).astype(int)  # borders are extrapolated
    assert np.abs(inner - np.array(colour)).max() <= 2, (fmt, colour, inner[:2])


def test_bayer_keeps_a_red_left_half_on_the_left():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (220, 0, 0)
    rgb[:, 8:] = (0, 0, 220)
    for fmt in ("BayerRG8", "BayerGR8", "BayerGB8", "BayerBG8"):
        img = to_station_image(pack(rgb, fmt), 16, 16, fmt)
        assert img[8, 3, 0] > 200 and img[8, 3, 2] < 20, fmt
        assert img[8, 12, 2] > 200 and img[8, 12, 0] < 20, fmt


def test_line_padding_is_dropped():
    padding = 3
    lines = [bytes(range(r * 10, r * 10 + W)) + b"\xee" * padding for r in range(H)]
    img = to_station_image(b"".join(lines), W, H, "Mono8", line_padding_bytes=padding)
    assert img.shape == (H, W) and not (img == 0xEE).any()
    assert img[3, 0] == 30 and img[3, W - 1] == 30 + W - 1


def test_output_owns_its_memory_so_the_buffer_can_go_back():
    for fmt in FORMATS:
        size = W * H * FORMATS[fmt].bytes_per_pixel
        source = bytearray(b"\x10" * size)
        arr = np.frombuffer(source, np.uint8)
        img = to_station_image(arr, W, H, fmt)
        before = img.copy()
        source[:] = b"\x99" * size  # the producer refills the buffer
        assert np.array_equal(img, before), fmt


def test_unknown_format_is_named():
    with pytest.raises(PixelFormatError, match="Mono12p"):
        to_station_image(b"\0" * 100, W, H, "Mono12p")


def test_short_payload_is_reported_with_sizes():
    with pytest.raises(PixelFormatError, match=r"RGB8 8x6 needs 144 bytes.*got 100"):
        to_station_image(b"\0" * 100, W, H, "RGB8")


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))),
       st.sampled_from(["RGB8", "BGR8", "RGBa8"]))
def test_colour_round_trip(rgb, fmt):
    h, w = rgb.shape[:2]
    assert np.array_equal(to_station_image(pack(rgb, fmt), w, h, fmt), rgb)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([("Mono8", 8), ("Mono10", 10), ("Mono12", 12), ("Mono16", 16)]), st.data())
def test_mono_round_trip(fmt_bits, data):
    fmt, bits = fmt_bits
    dtype = np.uint8 if bits == 8 else np.uint16
    img = data.draw(arrays(dtype, st.tuples(st.integers(1, 12), st.integers(1, 12)),
                           elements=st.integers(0, 2**bits - 1)))
    h, w = img.shape
    assert np.array_equal(unpack(pack(img, fmt), w, h, fmt, native_depth=True), img)
    assert np.array_equal(to_station_image(pack(img, fmt), w, h, fmt), (img >> (bits - 8)).astype(np.uint8))
