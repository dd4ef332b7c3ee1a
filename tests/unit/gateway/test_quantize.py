import base64

import numpy as np
import pytest

from gateway.quantize import EMBEDDING_TYPES, by_type

VECTORS = np.array([[1.0, -1.0, 0.5, -0.5, 0.0, 0.004, -0.004, 0.3, 0.9, -0.2, 0.1, 0.0, -1.0, 0.7, 0.2, -0.6]],
                   dtype=np.float32)


def test_int8_and_uint8_scale_the_unit_range_onto_their_own():
    assert by_type(VECTORS, "int8")[0][:7] == [127, -127, 64, -64, 0, 1, -1]
    assert by_type(VECTORS, "uint8")[0][:5] == [255, 0, 191, 64, 128]


def test_binary_types_pack_sign_bits_most_significant_first():
    ubinary = by_type(VECTORS, "ubinary")
    assert ubinary == [[0b10100101, 0b10100110]]
    assert by_type(VECTORS, "binary") == [[0b10100101 - 128, 0b10100110 - 128]]


def test_base64_is_the_little_endian_float32_bytes():
    (encoded,) = by_type(VECTORS, "base64")
    assert np.array_equal(np.frombuffer(base64.b64decode(encoded), dtype="<f4"), VECTORS[0])


def test_every_advertised_type_is_produced_and_no_other():
    assert all(len(by_type(VECTORS, kind)) == 1 for kind in EMBEDDING_TYPES)
    with pytest.raises(ValueError, match="unknown embedding type"):
        by_type(VECTORS, "float16")
