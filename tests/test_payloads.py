"""The wire contract on its own: codecs round-trip, errors map on every transport, the
committed stubs match the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from wiremark.payloads import errors, grpc_codec, rest, samples
from wiremark.payloads.contract import Classes, Family, Limits, PixelEncoding
from wiremark.payloads.errors import InvalidInput, TooLarge
from wiremark.payloads.timing import format_server_timing, parse_server_timing

ROOT = Path(__file__).resolve().parent.parent


def test_every_error_has_a_status_on_every_transport():
    subclasses = set(errors.WiremarkError.__subclasses__())
    assert subclasses == set(errors.HTTP_STATUS) == set(errors.GRPC_STATUS)
    assert all(400 <= s < 600 for s in errors.HTTP_STATUS.values())
    assert errors.GRPC_STATUS[errors.TooLarge] is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_stubs_match_the_proto():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
@pytest.mark.parametrize("encoding", list(PixelEncoding))
def test_rest_digits_round_trip(binary, encoding):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    body = rest.encode_request(Family.DIGITS, images, binary=binary, encoding=encoding)
    wire = rest.dump_msgpack(body) if binary else rest.dump_json(body)
    parsed = rest.parse_body(wire, "application/msgpack" if binary else "application/json")
    np.testing.assert_array_equal(rest.decode_request(Family.DIGITS, parsed, Limits(8))[0], images)


def test_float32_survives_both_rest_codecs_bit_exactly():
    probabilities = np.random.default_rng(1).random((5, 3), dtype=np.float32)
    prediction = Classes(probabilities.argmax(1), probabilities)
    for dump, media in (
        (rest.dump_json, "application/json"),
        (rest.dump_msgpack, "application/msgpack"),
    ):
        body = rest.encode_prediction(prediction)
        wire = dump(rest.to_plain(body) if media.endswith("msgpack") else body)
        back = rest.decode_prediction(Family.TABULAR, rest.parse_body(wire, media))
        np.testing.assert_array_equal(back.probabilities, probabilities)


def test_msgpack_keeps_float32_on_the_wire():
    body = rest.to_plain(
        rest.encode_prediction(
            Classes(np.array([0]), np.array([[0.5, 0.25, 0.25]], dtype=np.float32))
        )
    )
    assert b"\xca" in rest.dump_msgpack(body)  # 0xca: MessagePack float 32
    assert b"\xcb" not in rest.dump_msgpack(body)  # 0xcb: float 64


def test_grpc_iris_round_trip():
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.0, 2.2, 5.0, 1.5]], dtype=np.float32)
    data = grpc_codec.encode_request(Family.TABULAR, "iris", rows).SerializeToString()
    request = grpc_codec.parse(grpc_codec.REQUEST_TYPES[Family.TABULAR], data)
    assert request.model == "iris"  # type: ignore[attr-defined]
    np.testing.assert_array_equal(grpc_codec.DECODERS[Family.TABULAR](request, Limits(8)), rows)


def test_server_timing_round_trip():
    header = format_server_timing({"decode": 0.0412, "infer": 1.5, "encode": 0.01})
    assert header == "decode;dur=0.041, infer;dur=1.500, encode;dur=0.010"
    assert parse_server_timing(header) == {"decode": 0.041, "infer": 1.5, "encode": 0.01}
    assert parse_server_timing('cache;desc="x", db;dur=2') == {"db": 2.0}


def test_laps_time_each_stage_and_skip_restarts():
    import time

    from wiremark.payloads.timing import Laps

    laps = Laps()
    laps.lap("decode")
    time.sleep(0.02)
    laps.restart()  # e.g. an injected delay: no stage's time
    laps.lap("infer")
    time.sleep(0.005)
    laps.lap("encode")
    timing = parse_server_timing(laps.header())
    assert list(timing) == ["decode", "infer", "encode"]
    assert timing["infer"] < 5 and timing["encode"] >= 4


def test_images_are_checked_from_their_headers_before_decoding():
    from wiremark.payloads.errors import InvalidInput
    from wiremark.payloads.images import check_image

    from .test_bad_input import BOMB, TIFF, TINY, png_header

    photo = samples.face_images(sizes=(160,))[0].data
    check_image(photo, "f", max_pixels=160 * 160)  # a documented format, within the limit
    with pytest.raises(InvalidInput, match="above the limit of 8,388,608") as err:
        check_image(BOMB, "instances[0].image", max_pixels=8 * 1024 * 1024)
    assert err.value.field == "instances[0].image"
    with pytest.raises(InvalidInput, match=r"4000x3000 = 12,000,000 pixels, above the limit"):
        check_image(png_header(4000, 3000), "f", max_pixels=8 * 1024 * 1024)
    with pytest.raises(InvalidInput, match="above the limit of 100 "):
        check_image(photo, "f", max_pixels=100)
    with pytest.raises(InvalidInput, match="smaller than 12x12"):
        check_image(TINY, "f", max_pixels=10**6)
    with pytest.raises(InvalidInput, match="not a decodable image"):
        check_image(TIFF, "f", max_pixels=10**6)


def test_rest_formats_give_the_same_batch():
    """Row values, named rows, columnar values and named columns: one batch, and each
    remembers its format for the reply."""
    rows = samples.iris_rows(3)[0].tolist()
    bodies = [
        {"instances": rows},
        {"instances": [{"features": r} for r in rows]},
        {"inputs": rows},
        {"inputs": {"features": rows}, "signature_name": "serving_default"},
    ]
    for body in bodies:
        batch, form = rest.decode_request(Family.TABULAR, body, Limits(8))
        np.testing.assert_array_equal(batch, np.asarray(rows, dtype=np.float32))
        assert form.columnar == ("inputs" in body)


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        ({"inputs": {"features": [[1, 2, 3, 4]], "extra": [1]}}, InvalidInput, "extra"),
        ({"instances": [{"feature": [1, 2, 3, 4]}]}, InvalidInput, "alias not found"),
        ({"inputs": {"features": [1, 2, 3, 4]}, "instances": []}, InvalidInput, "not both"),
        ({"instances": [[1, 2, 3, 4]], "signature_name": 3}, InvalidInput, "string"),
        ({"inputs": [[1, 2, 3, 4]] * 9}, TooLarge, "limit of 8"),
    ],
)
def test_rest_formats_refuse_what_tf_serving_refuses(body, error, words):
    with pytest.raises(error, match=words):
        rest.decode_request(Family.TABULAR, body, Limits(8))


def test_columnar_named_inputs_of_different_sizes():
    body = {"inputs": {"image": [b"a", b"b"], "image_id": ["x"]}}
    with pytest.raises(InvalidInput, match="different batch sizes"):
        rest.decode_request(Family.FACES, body, Limits(8))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"\x91" * 100_000 + b"\x00", "nested too deeply"),
        (b"\xc1", "reserved or unknown type byte"),
        (b"\x01\x02", "extra bytes"),
        (b"\x92\x01", "incomplete input"),
    ],
)
def test_bad_msgpack_says_what_is_wrong(body: bytes, says: str) -> None:
    with pytest.raises(errors.MalformedBody) as err:
        rest.parse_body(body, "application/msgpack")
    assert err.value.message.startswith("invalid MessagePack: ") and says in err.value.message
    assert err.value.field == "body"
