"""derive diff / derive.diff: which derivations differ between two specs."""

from __future__ import annotations

import pytest
from corpus import ROOT

import derive
from derive.cli import main
from derive.spec import load_spec, spec_from_dict

TWO_CIRCLES = ROOT / "examples" / "two_circles.toml"  # 2-8-1 tanh/sigmoid, BCE, adam


def _variant(**changes) -> derive.Spec:
    data = load_spec(TWO_CIRCLES).to_dict()
    for key, value in changes.items():
        if key == "hidden":
            data["layers"][0]["activation"] = value
        elif key == "lr":
            data["optimizer"]["lr"] = value
        else:
            data[key] = value
    return spec_from_dict(data)


def test_sigmoid_to_tanh_in_a_hidden_layer():
    result = derive.diff(_variant(hidden="sigmoid"), TWO_CIRCLES)
    assert not result.same
    names = [item.name for item in result.differing]
    assert names == [
        "layer 1 activation",
        "layer 1 f'(z)",
        "layer 1 f'(a)",
        "layer 1 f' used",
    ]
    used = result.differing[-1]
    assert used.a.startswith("a*(1 - a)") and used.b.startswith("1 - a**2")
    same = {item.name for item in result.items if item.same}
    assert {"fused output delta", "stable loss form", "loss gradient",
            "layer 1 backward", "optimizer update"} <= same  # fmt: skip
    assert "_gradients" in result.functions and "_train" in result.functions
    assert "init_params" in result.unchanged and "check_gradients" in result.unchanged
    text = str(result)
    assert "the derivations differ in 4 of" in text and "| tanh: a = tanh(z)" in text
    markdown = result.render("markdown")
    assert "| layer 1 f' used | `a*(1 - a)  (in a)` | `1 - a**2  (in a)` |" in markdown


def test_only_run_time_values_differ():
    result = derive.diff(TWO_CIRCLES, _variant(lr=0.5, name="other"))
    assert result.same and not result.differing
    settings = {key: (a, b) for key, a, b in result.settings}
    assert settings["optimizer.lr"][1] == "0.5" and settings["name"] == (
        "two_circles",
        "other",
    )
    assert result.functions == ()  # the modules differ only in constants
    assert "none (the modules differ only in constants)" in str(result)


def test_dtype_changes_code_not_derivations():
    result = derive.diff(TWO_CIRCLES, _variant(dtype="float32"))
    assert result.same
    assert ("dtype", "float64", "float32") in result.settings
    assert "_train" in result.functions  # fast tanh and fast-math in float32


def test_a_layer_only_in_one_spec_and_another_loss():
    data = load_spec(TWO_CIRCLES).to_dict()
    data["layers"].insert(1, {"units": 4, "activation": "relu"})
    data["loss"] = {"name": "mse"}
    data["layers"][-1]["activation"] = "identity"
    result = derive.diff(TWO_CIRCLES, data)
    items = {item.name: item for item in result.differing}
    assert items["layer 3 activation"].a is None
    assert items["layer 3 activation"].b.startswith("identity")
    assert "fused output delta" in items and "loss" in items
    assert "-" in str(result)


def test_cli_exit_codes(tmp_path, capsys):
    other = tmp_path / "sigmoid_hidden.toml"
    other.write_text(_variant(hidden="sigmoid").to_toml())
    same = tmp_path / "faster.toml"
    same.write_text(_variant(lr=0.1).to_toml())
    assert main(["diff", str(other), str(TWO_CIRCLES)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("derive diff sigmoid_hidden.toml two_circles.toml")
    assert main(["diff", str(TWO_CIRCLES), str(same), "--format", "markdown"]) == 0
    assert "derivations are the same" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ninput = 2\n')
    for args in ([str(TWO_CIRCLES), str(tmp_path / "missing.toml")],
                 [str(bad), str(TWO_CIRCLES)]):  # fmt: skip
        assert main(["diff", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("derive: ") and "Traceback" not in err


def test_render_refuses_unknown_formats():
    with pytest.raises(ValueError, match="text' or 'markdown"):
        derive.diff(TWO_CIRCLES, TWO_CIRCLES).render("latex")
