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


def test_null_in_an_optional_double_column_becomes_nan() -> None:
    batch = validate(Records(records=[{"color": "red", "size": 3, "fragile": True,
                                       "weight": None}]), MIXED)
    assert np.isnan(batch.as_matrix()[0, 3]) if batch.matrix is not None else \
        np.isnan(batch.columns["weight"][0])


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
        ({"size": None}, "column 'size': expected long, got null in row 0 (the column is "
                         "required)"),
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
    table, _ = protocol.parse_csv(b"a,b,c,d\n1,2,3,4\n1,2.5,3,4\n")
    batch = validate(table, IRIS)
    assert batch.as_matrix().tolist() == [[1, 2, 3, 4], [1, 2.5, 3, 4]]
    table, _ = protocol.parse_csv(b"color,size,fragile,weight\nred,3,true,\n")
    assert np.isnan(validate(table, MIXED).columns["weight"][0])  # optional: empty is NaN
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


# --- missing and non-finite values: a 400 naming the column, never the model's 500 -----------
REQUIRED = "(the column is required)"


def tables(values: dict) -> list:
    """The same one-row input in every shape the protocol parses into (dataframe_split,
    dataframe_records / list-of-dicts instances, columnar inputs; positional instances)."""
    names = list(values)
    row = [values[n] for n in names]
    return [Rows(rows=[[1.0] * len(row), row], columns=names),
            Records(records=[dict(zip(names, [1.0] * len(row), strict=True)), values]),
            Columnar(data={n: [1.0, values[n]] for n in names}),
            Rows(rows=[[1.0] * len(row), row])]


@pytest.mark.parametrize("bad", [None, float("nan"), np.float64("nan")])
def test_null_or_nan_in_a_required_double_column_is_a_400_naming_it(bad) -> None:
    what = "null" if bad is None else "NaN"
    for table in tables({"a": 1.0, "b": 2.0, "c": bad, "d": 4.0}):
        with pytest.raises(InputError) as exc:
            validate(table, IRIS, True)
        assert message(exc) == f"column 'c': expected double, got {what} in row 1 {REQUIRED}"


@pytest.mark.parametrize("bad", [float("inf"), float("-inf")])
def test_infinity_is_refused_in_any_float_column(bad) -> None:
    for table in tables({"a": 1.0, "b": bad, "c": 3.0, "d": 4.0}):
        with pytest.raises(InputError, match=r"column 'b': expected a finite double, got -?inf "
                                             r"in row 1"):
            validate(table, IRIS, True)
    with pytest.raises(InputError, match="column 'weight': expected a finite double"):
        validate(Records(records=[{"color": "r", "size": 1, "fragile": True, "weight": bad}]),
                 MIXED)


def test_a_record_without_a_required_key_names_the_column_and_row() -> None:
    records = [{"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 1, "b": 2, "d": 4}]
    with pytest.raises(InputError) as exc:
        validate(Records(records=records), IRIS, False)
    assert message(exc) == f"column 'c': expected double, got no value in row 1 {REQUIRED}"


@pytest.mark.parametrize(("csv", "expected"), [
    (b"a,b,c,d\n1,2,3,4\n1,,3,4\n", "column 'b': expected double, got an empty CSV cell in "
                                     f"row 1 {REQUIRED}"),
    (b"a,b,c,d\n1,2,NaN,4\n", f"column 'c': expected double, got NaN in row 0 {REQUIRED}"),
    (b"a,b,c,d\n1,2,nan,4\n", f"column 'c': expected double, got NaN in row 0 {REQUIRED}"),
    (b"a,b,c,d\n1,inf,3,4\n", "column 'b': expected a finite double, got inf in row 0"),
    (b"a,b,c,d\n1,2,3,-Infinity\n", "column 'd': expected a finite double, got -inf in row 0"),
])
def test_csv_missing_and_non_finite_cells_are_named(csv, expected) -> None:
    table, _ = protocol.parse_csv(csv)
    with pytest.raises(InputError) as exc:
        validate(table, IRIS)
    assert message(exc) == expected


TYPED = Signature.from_specs([
    {"type": "long", "name": "n"}, {"type": "integer", "name": "i"},
    {"type": "float", "name": "f"}, {"type": "boolean", "name": "flag"},
    {"type": "string", "name": "s"}, {"type": "datetime", "name": "when"},
    {"type": "long", "name": "opt_n", "required": False},
    {"type": "boolean", "name": "opt_flag", "required": False},
    {"type": "string", "name": "opt_s", "required": False},
    {"type": "float", "name": "opt_f", "required": False},
])
GOOD = {"n": 1, "i": 2, "f": 1.5, "flag": True, "s": "x", "when": "2024-01-01T00:00:00"}


@pytest.mark.parametrize("column", ["n", "i", "f", "flag", "s", "when"])
@pytest.mark.parametrize("absent", [False, True])
def test_every_required_type_refuses_a_missing_value(column, absent) -> None:
    record = {k: v for k, v in GOOD.items() if not (absent and k == column)}
    if not absent:
        record[column] = None
    for table in (Records(records=[GOOD, record]),
                  Rows(rows=[list(GOOD.values()), [record.get(k) for k in GOOD]],
                       columns=list(GOOD))):
        if absent and isinstance(table, Rows):
            continue  # a row always has every column it names
        spec = next(c for c in TYPED.columns if c.name == column)
        with pytest.raises(InputError) as exc:
            validate(table, TYPED)
        what = "no value" if absent else "null"
        assert message(exc) == f"column '{column}': expected {spec.type}, got {what} in row 1 " \
                               f"{REQUIRED}"


def test_optional_columns_take_missing_values_in_every_type() -> None:
    batch = validate(Records(records=[GOOD | {"opt_n": 5, "opt_flag": False, "opt_s": "y",
                                              "opt_f": 2.5},
                                      GOOD | {"opt_n": None, "opt_flag": None, "opt_s": None}]),
                     TYPED)
    cols = batch.columns
    assert cols["opt_n"].dtype == np.float64 and cols["opt_n"][0] == 5
    assert np.isnan(cols["opt_n"][1])  # like a pandas integer column with a gap
    assert cols["opt_flag"].tolist() == [False, None]
    assert cols["opt_s"].tolist() == ["y", None] and np.isnan(cols["opt_f"][1])
    assert cols["n"].dtype == np.int64  # complete integer columns keep their type


def test_a_double_too_large_for_a_float_column_is_named() -> None:
    with pytest.raises(InputError, match=r"column 'f': value 1e\+39 in row 0 is out of range "
                                         r"for float"):
        validate(Records(records=[GOOD | {"f": 1e39}]), TYPED)


def test_an_integral_double_too_large_for_a_long_column_is_named() -> None:
    with pytest.raises(InputError, match="out of range for long"):
        validate(Records(records=[GOOD | {"n": 1e30}]), TYPED)
