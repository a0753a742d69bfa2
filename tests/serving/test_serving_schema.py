"""The signature validator, in-process (no server, no MLflow)."""

from __future__ import annotations

import numpy as np
import pytest

from serving import protocol
from serving.errors import InputError, MalformedRequest
from serving.schema import Columnar, Records, Rows, Signature, validate

IRIS = Signature.from_specs(
    [{"type": "double", "name": n, "required": True} for n in ("a", "b", "c", "d")]
)
MIXED = Signature.from_specs(
    [
        {"type": "string", "name": "color"},
        {"type": "long", "name": "size"},
        {"type": "boolean", "name": "fragile"},
        {"type": "double", "name": "weight", "required": False},
    ]
)
TENSOR = Signature.from_specs(
    [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}}]
)


def message(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.message


def test_signature_is_read_from_mlmodel_json_string() -> None:
    sig = Signature.from_mlmodel(
        {"signature": {"inputs": '[{"type": "double", "name": "x", "required": true}]'}}
    )
    assert sig.kind == "columns" and sig.names == ["x"] and sig.all_float
    assert Signature.from_mlmodel({}).kind == "none"


def test_numeric_rows_take_the_fast_path_as_float64_matrix() -> None:
    batch = validate(Rows(rows=[[1, 2, 3, 4.5]], columns=["a", "b", "c", "d"]), IRIS, False)
    assert batch.matrix is not None and batch.matrix.dtype == np.float64
    assert batch.matrix.tolist() == [[1.0, 2.0, 3.0, 4.5]]
    assert batch.columns is None


def test_columns_are_reordered_to_signature_order_and_extras_ignored() -> None:
    batch = validate(Rows(rows=[[4, 3, 2, 1, 99]], columns=["d", "c", "b", "a", "extra"]), IRIS)
    assert batch.as_matrix().tolist() == [[1, 2, 3, 4]]


def test_missing_required_column_names_it() -> None:
    with pytest.raises(InputError) as exc:
        validate(Rows(rows=[[1, 2, 3]], columns=["a", "b", "c"]), IRIS)
    assert "missing required column 'd'" in message(exc)


def test_string_value_names_column_value_and_row() -> None:
    rows = [[1, 2, 3, 4]] * 3 + [[1, 2, "abc", 4]]
    with pytest.raises(InputError) as exc:
        validate(Rows(rows=rows, columns=["a", "b", "c", "d"]), IRIS)
    assert message(exc) == "column 'c': expected double, got string 'abc' in row 3"


def test_boolean_among_numbers_is_rejected_even_on_fast_path_input() -> None:
    with pytest.raises(InputError) as exc:
        validate(Rows(rows=[[1.5, True, 3, 4]], columns=["a", "b", "c", "d"]), IRIS, True)
    assert "column 'b': expected double, got boolean true in row 0" in message(exc)


def test_null_in_double_column_becomes_nan() -> None:
    batch = validate(Rows(rows=[[1, None, 3, 4]], columns=["a", "b", "c", "d"]), IRIS)
    assert np.isnan(batch.as_matrix()[0, 1])


def test_ragged_rows_are_rejected_with_row_number() -> None:
    with pytest.raises(InputError) as exc:
        validate(Rows(rows=[[1, 2, 3, 4], [1, 2]], columns=["a", "b", "c", "d"]), IRIS)
    assert "row 1: expected 4 values (one per column), got 2" in message(exc)


def test_rows_without_column_names_are_positional() -> None:
    assert validate(Rows(rows=[[1, 2, 3, 4]]), IRIS).as_matrix().shape == (1, 4)
    with pytest.raises(InputError) as exc:
        validate(Rows(rows=[[1, 2, 3]]), IRIS)
    assert "must have 4 values" in message(exc)


def test_empty_batches_are_rejected_in_every_shape() -> None:
    for table in (Rows(rows=[], columns=["a"]), Records(records=[]),
                  Columnar(data={"a": [], "b": [], "c": [], "d": []})):
        with pytest.raises(InputError, match="empty batch"):
            validate(table, IRIS)


def test_records_with_mixed_types_build_typed_columns() -> None:
    batch = validate(
        Records(records=[{"color": "red", "size": 3, "fragile": True},
                         {"color": "blue", "size": 4.0, "fragile": False, "weight": 1.5}]),
        MIXED,
    )
    assert batch.columns["size"].dtype == np.int64
    assert batch.columns["fragile"].tolist() == [True, False]
    assert np.isnan(batch.columns["weight"][0])
    frame = batch.as_frame()
    assert list(frame.columns) == ["color", "size", "fragile", "weight"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"size": 1.5}, "column 'size': expected long, got double 1.5 in row 0"),
        ({"size": None}, "column 'size': expected long, got null null in row 0"),
        ({"size": "3"}, "column 'size': expected long, got string '3' in row 0"),
        ({"color": 7}, "column 'color': expected string, got integer 7 in row 0"),
        ({"fragile": 1}, "column 'fragile': expected boolean, got integer 1 in row 0"),
    ],
)
def test_wrong_types_per_column_type(change: dict, expected: str) -> None:
    record = {"color": "red", "size": 3, "fragile": True, **change}
    with pytest.raises(InputError) as exc:
        validate(Records(records=[record]), MIXED)
    assert message(exc) == expected


def test_optional_column_may_be_absent_but_required_may_not() -> None:
    validate(Records(records=[{"color": "red", "size": 3, "fragile": True}]), MIXED)
    with pytest.raises(InputError, match="missing required column 'fragile'"):
        validate(Records(records=[{"color": "red", "size": 3}]), MIXED)


def test_columnar_inputs_must_have_equal_lengths() -> None:
    with pytest.raises(InputError, match="different lengths"):
        validate(Columnar(data={"a": [1, 2], "b": [1], "c": [1], "d": [1]}), IRIS)


def test_csv_strings_are_converted_and_bad_cells_named() -> None:
    table, _ = protocol.parse_csv(b"a,b,c,d\n1,2,3,4\n1,,3,4\n")
    batch = validate(table, IRIS)
    assert batch.as_matrix()[0].tolist() == [1, 2, 3, 4] and np.isnan(batch.as_matrix()[1, 1])
    table, _ = protocol.parse_csv(b"a,b,c,d\n1,2,x,4\n")
    with pytest.raises(InputError, match="column 'c': expected double, got string 'x' in row 0"):
        validate(table, IRIS)


def test_tensor_shape_and_dtype_are_checked() -> None:
    batch = validate(Rows(rows=[[1, 2, 3]]), TENSOR, False)
    assert batch.tensor.dtype == np.float32 and batch.tensor.shape == (1, 3)
    with pytest.raises(InputError, match=r"expected shape \[-1, 3\], got \[1, 2\]"):
        validate(Rows(rows=[[1, 2]]), TENSOR)
    with pytest.raises(InputError, match="expected float32, got string 'x'"):
        validate(Rows(rows=[[1, 2, "x"]]), TENSOR)
    with pytest.raises(InputError, match="ragged"):
        validate(Rows(rows=[[1, 2, 3], [1]]), TENSOR)


def test_no_signature_passes_data_through() -> None:
    sig = Signature(kind="none")
    assert validate(Rows(rows=[[1, 2]]), sig).tensor.tolist() == [[1, 2]]
    assert validate(Rows(rows=[[1, "x"]], columns=["p", "q"]), sig).names == ["p", "q"]


def test_protocol_rejects_malformed_json_and_unknown_shapes() -> None:
    with pytest.raises(MalformedRequest, match="not valid JSON"):
        protocol.parse_mlflow_json(b"{")
    with pytest.raises(MalformedRequest, match="exactly one of the fields"):
        protocol.parse_mlflow_json(b'{"instances": [], "inputs": []}')
    with pytest.raises(MalformedRequest, match="received a JSON list"):
        protocol.parse_mlflow_json(b"[1, 2]")


def test_bool_byte_scan() -> None:
    assert protocol.may_contain_bools(b'{"instances": [[true]]}')
    assert not protocol.may_contain_bools(b'{"instances": [[1.5, 2]]}')
