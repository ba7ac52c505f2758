"""Reading data files and the embedded demo data (no generated module needed)."""

from __future__ import annotations

import numpy as np
import pytest

from derive.data import DataError, Table, check_targets, load_table
from derive.datasets import make_circles, two_circles
from derive.errors import DeriveError


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------ CSV


def test_csv_default_target_is_the_last_column(tmp_path):
    path = write(tmp_path, "a,b,y\n1,2,0\n3,4.5,1\n\n")  # a blank last line is fine
    table = load_table(path, n_inputs=2, labels=True)
    np.testing.assert_array_equal(table.X, [[1.0, 2.0], [3.0, 4.5]])
    assert table.y.dtype == np.int64 and table.y.tolist() == [0, 1]
    assert table.feature_names == ("a", "b") and table.target_names == ("y",)
    assert table.rows == ("line 2", "line 3")


def test_csv_target_by_name_and_comma_list(tmp_path):
    path = write(tmp_path, "label,a,b\nyes,1,2\nno,3,4\n")
    table = load_table(path, n_inputs=2, target="label", labels=True)
    assert table.y.tolist() == ["yes", "no"] and table.feature_names == ("a", "b")
    np.testing.assert_array_equal(table.X, [[1, 2], [3, 4]])
    path = write(tmp_path, "u,x,v\n1,2,3\n4,5,6\n")
    table = load_table(path, n_inputs=1, n_targets=2, target="v, u")
    np.testing.assert_array_equal(table.y, [[3, 1], [6, 4]])
    np.testing.assert_array_equal(table.X, [[2], [5]])


def test_csv_prediction_file_without_target(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n")
    table = load_table(path, n_inputs=2, target_required=False)
    assert table.y is None and table.target_names == ()
    with pytest.raises(DataError, match="2 feature column\\(s\\) \\+ 1 target"):
        load_table(path, n_inputs=2)


def test_csv_columns_by_a_models_names(tmp_path):
    path = write(tmp_path, "extra,y,b,a\n9,1,2,3\n")
    table = load_table(
        path, n_inputs=2, feature_names=("a", "b"), known_targets=("y",), labels=True
    )
    np.testing.assert_array_equal(table.X, [[3, 2]])
    assert table.y.tolist() == [1]
    no_target = write(tmp_path, "b,a\n2,3\n", "x.csv")
    table = load_table(
        no_target,
        n_inputs=2,
        feature_names=("a", "b"),
        known_targets=("y",),
        target_required=False,
    )
    assert table.y is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty; it needs a header row"),
        ("  \n\n", "is empty"),
        ("a,b,y\n", "has a header but no data rows"),
        ("1,2,0\n3,4,1\n", "looks like data; add a header row"),
        (
            "a,b,c,y\n1,2,3,0\n",
            "has 4 columns (a, b, c, y) but the spec needs 2 feature",
        ),
        ("a,y\n1,0\n", "has 2 columns"),
        ("a,b,y\n1,2,0\n1,2\n", "line 3: 2 cells, but the header has 3 columns"),
        ("a,b,y\n1,2,0\n1,abc,1\n", "line 3, column 'b' holds 'abc', not a number"),
        ("a,b,y\n1,,0\n", "line 2, column 'b' is empty"),
        ("a,b,y\n1,nan,0\n", "line 2, column 'b' is nan; replace it"),
        ("a,b,y\n1,inf,0\n", "column 'b' is inf"),
        ("a,a,y\n1,2,0\n", "column name 'a' appears twice"),
        ("a,,y\n1,2,0\n", "column 2 of the header has no name"),
        ("a,b,y\n1,2,0.5\n", "line 2, column 'y' holds 0.5, not a class label"),
        ("a,b,y\n1,2,\n", "line 2, column 'y' is empty; give every row a label"),
    ],
)
def test_csv_problems_name_the_place_and_the_fix(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as info:
        load_table(path, n_inputs=2, labels=True)
    assert message in str(info.value)
    assert "\n" not in str(info.value)  # one line
    assert str(path) in str(info.value) or "line" in str(info.value)


def test_regression_targets_must_be_numbers(tmp_path):
    path = write(tmp_path, "a,b,y\n1,2,high\n")
    with pytest.raises(DataError, match="column 'y' holds 'high', not a number"):
        load_table(path, n_inputs=2)


def test_missing_file_directory_and_bad_target(tmp_path):
    with pytest.raises(DataError, match="data file not found: .*; check the path"):
        load_table(tmp_path / "nope.csv", n_inputs=2)
    with pytest.raises(DataError, match="is a directory"):
        load_table(tmp_path, n_inputs=2)
    path = write(tmp_path, "a,b,y\n1,2,0\n")
    with pytest.raises(DataError, match="no column 'label' \\(columns: a, b, y\\)"):
        load_table(path, n_inputs=2, target="label")
    with pytest.raises(DataError, match="2 feature columns besides the target"):
        load_table(path, n_inputs=1, target="y")
    with pytest.raises(DataError, match="names 2 column\\(s\\) but the network has 1"):
        load_table(path, n_inputs=1, target="a,y")
    with pytest.raises(DataError, match="empty column name"):
        load_table(path, n_inputs=2, target="y,")
    assert issubclass(DataError, DeriveError) and issubclass(DataError, ValueError)


def test_not_utf8(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b,y\n\xff\xfe,1,0\n")
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_table(path, n_inputs=2)


# ------------------------------------------------------------------------ NPZ


def test_npz_with_X_and_y_or_Y(tmp_path):
    X = np.arange(6.0).reshape(3, 2)
    np.savez(tmp_path / "d.npz", X=X, y=np.array([0, 1, 1]))
    table = load_table(tmp_path / "d.npz", n_inputs=2, labels=True)
    np.testing.assert_array_equal(table.X, X)
    assert table.y.tolist() == [0, 1, 1] and table.rows[0] == "row 0"
    np.savez(tmp_path / "r.npz", X=X, Y=np.ones((3, 2)))
    table = load_table(tmp_path / "r.npz", n_inputs=2, n_targets=2)
    assert table.y.shape == (3, 2) and table.target_names == ("Y1", "Y2")
    np.savez(tmp_path / "p.npz", X=X)
    assert load_table(tmp_path / "p.npz", n_inputs=2, target_required=False).y is None
    np.savez(tmp_path / "s.npz", X=X, y=np.array(["a", "b", "a"]))
    assert load_table(tmp_path / "s.npz", n_inputs=2, labels=True).y.tolist() == [
        "a",
        "b",
        "a",
    ]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"features": np.ones((2, 2))}, "has no array 'X' (it has: features)"),
        ({"X": np.ones((2, 3)), "y": np.ones(2)}, "X has 3 columns but the spec takes"),
        ({"X": np.ones(4), "y": np.ones(4)}, "X has shape (4,); give a 2-D array"),
        ({"X": np.array([[1.0, np.nan]]), "y": np.ones(1)}, "X[0, 1] is nan"),
        ({"X": np.ones((2, 2)), "y": np.ones(3)}, "y has 3 rows but X has 2"),
        ({"X": np.ones((2, 2))}, "has no array 'y'"),
        (
            {"X": np.ones((2, 2)), "y": np.array([0.0, 0.5])},
            "y[1] = 0.5 is not a class",
        ),
        ({"X": np.array([["a", "b"]]), "y": np.ones(1)}, "X holds <U1 values"),
    ],
)
def test_npz_problems(tmp_path, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as info:
        load_table(path, n_inputs=2, labels=True)
    assert message in str(info.value)


def test_npz_that_is_not_an_npz_or_holds_objects(tmp_path):
    path = write(tmp_path, "not a zip", "d.npz")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_table(path, n_inputs=2)
    np.savez(tmp_path / "o.npz", X=np.array([[1, None]], dtype=object))
    with pytest.raises(DataError, match="not a readable .npz"):
        load_table(tmp_path / "o.npz", n_inputs=2)
    np.savez(tmp_path / "t.npz", X=np.ones((1, 2)), y=np.ones(1))
    with pytest.raises(DataError, match="--target picks a CSV column"):
        load_table(tmp_path / "t.npz", n_inputs=2, target="y")


# ------------------------------------------------------- targets vs the network


def table_of(y, rows=None):
    y = np.asarray(y)
    n = len(y)
    return Table(
        X=np.zeros((n, 2)),
        y=y,
        feature_names=("a", "b"),
        target_names=("y",),
        source="d.csv",
        rows=tuple(rows or (f"line {i + 2}" for i in range(n))),
    )


def check(table, task="binary", n_outputs=1, targets="probability", classes=None):
    check_targets(
        table,
        task=task,
        n_outputs=n_outputs,
        targets=targets,
        spec_name="net",
        classes=classes,
    )


def test_labels_that_do_not_fit_the_output_layer():
    check(table_of([0, 1, 1]))
    check(table_of(["cat", "dog"]))
    check(table_of([1]))  # one class of 0/1 is fine
    with pytest.raises(DataError, match="3 classes \\(0, 1, 2\\) but spec 'net'"):
        check(table_of([0, 1, 2]))
    with pytest.raises(DataError, match="use a softmax output with 3 units"):
        check(table_of([0, 1, 2]))
    with pytest.raises(DataError, match="4 classes .* set the last layer's units = 4"):
        check(table_of([0, 1, 2, 3]), task="multiclass", n_outputs=3)
    with pytest.raises(DataError, match="only 1 class\\(es\\) \\(cat\\)"):
        check(table_of(["cat", "cat"]))
    with pytest.raises(
        DataError, match="line 3: label 'bird' .* trained on \\(cat, dog"
    ):
        check(table_of(["cat", "bird"]), classes=np.array(["cat", "dog"]))
    with pytest.raises(DataError, match="targets have 2 columns but .* 3 units"):
        check(table_of(np.eye(2)), task="multiclass", n_outputs=3)


def test_probability_targets_must_be_in_0_1():
    check(table_of(np.array([[0.2], [1.0]])), task="regression")
    with pytest.raises(DataError, match="line 3: target 1.5 is outside \\[0, 1\\]"):
        check(table_of(np.array([[0.2], [1.5]])), task="regression")
    check(table_of(np.array([[5.0]])), task="regression", targets="any")


# ---------------------------------------------------------------- demo data


def test_two_circles_is_the_documented_dataset():
    X, y = two_circles()
    assert X.shape == (1000, 2) and y.shape == (1000,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [500, 500]
    radius = np.hypot(X[:, 0], X[:, 1])
    assert abs(radius[y == 0].mean() - 1.0) < 0.02
    assert abs(radius[y == 1].mean() - 0.3) < 0.03
    assert 0.08 < np.std(radius[y == 0] - 1.0) < 0.12  # noise 0.1
    X2, y2 = two_circles()
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(y[:500], np.zeros(500))  # shuffled


def test_make_circles_without_noise_lies_on_the_circles():
    X, y = make_circles(10, factor=0.5, shuffle=False)
    np.testing.assert_allclose(np.hypot(X[:, 0], X[:, 1]), [1.0] * 5 + [0.5] * 5)
    assert y.tolist() == [0] * 5 + [1] * 5
    np.testing.assert_allclose(X[0], [1.0, 0.0])
    with pytest.raises(ValueError, match="factor"):
        make_circles(10, factor=1.5)


def test_a_label_column_that_is_not_last_gets_a_hint(tmp_path):
    path = write(tmp_path, "species,a,b\nsetosa,1,2\n")
    with pytest.raises(DataError, match="if 'species' holds the labels, pass --target"):
        load_table(path, n_inputs=2, labels=True)


# ------------------------------------------------------------ images and signals


def test_csv_rows_of_an_image_spec_are_flattened_pixels(tmp_path):
    header = ",".join(f"p{i}" for i in range(8)) + ",label"
    rows = [",".join(str(v) for v in range(8)) + ",1", ",".join("0" * 8) + ",0"]
    path = write(tmp_path, header + "\n" + "\n".join(rows) + "\n")
    table = load_table(path, n_inputs=8, labels=True, input_shape=(2, 2, 2))
    assert table.X.shape == (2, 8) and table.y.tolist() == [1, 0]
    bad = write(tmp_path, "a,b,c,label\n1,2,3,0\n", "bad.csv")
    with pytest.raises(DataError, match=r"input = \[2, 2, 2\] \(8 values per row"):
        load_table(bad, n_inputs=8, labels=True, input_shape=(2, 2, 2))


def test_npz_images_in_their_shape_or_as_rows(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=float).reshape(2, 1, 3, 4)
    path = tmp_path / "images.npz"
    np.savez(path, X=images, y=np.array([0, 1]))
    table = load_table(path, n_inputs=12, labels=True, input_shape=(1, 3, 4))
    np.testing.assert_array_equal(table.X, images.reshape(2, 12))
    np.savez(path, X=images.reshape(2, 12), y=np.array([0, 1]))
    rows = load_table(path, n_inputs=12, labels=True, input_shape=(1, 3, 4))
    np.testing.assert_array_equal(rows.X, table.X)
    np.savez(path, X=images.reshape(2, 1, 4, 3), y=np.array([0, 1]))
    with pytest.raises(
        DataError, match=r"samples of shape \(1, 4, 3\).*\(n, 1, 3, 4\)"
    ):
        load_table(path, n_inputs=12, labels=True, input_shape=(1, 3, 4))
    np.savez(path, X=images.reshape(2, 6, 2), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"X has shape \(2, 6, 2\); give a 2-D array"):
        load_table(path, n_inputs=12, labels=True, input_shape=(1, 3, 4))
