from dataclasses import dataclass, field

import pytest

from pipeline.config import dump_config, load_config, parse_override, to_dict
from pipeline.errors import ConfigError


@dataclass
class Inner:
    lr: float = 0.1
    epochs: int = 3


@dataclass
class Outer:
    name: str = "x"
    path: str | None = None
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)


def test_layers_apply_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: from-file\ninner:\n  lr: 0.5\n")
    cfg = load_config(Outer, f, ["inner.epochs=7", "tags=[a, b]"], extra={"path": "p"})
    assert cfg.name == "from-file"
    assert cfg.inner.lr == 0.5 and cfg.inner.epochs == 7
    assert cfg.tags == ["a", "b"] and cfg.path == "p"


def test_int_is_accepted_for_float_and_coerced():
    cfg = load_config(Outer, None, ["inner.lr=1"])
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)


@pytest.mark.parametrize(
    "override, words",
    [
        ("inner.lrr=0.1", ["unknown config key 'inner.lrr'", "did you mean 'inner.lr'?"]),
        ("inner.epochs=abc", ["inner.epochs", "integer"]),
        ("bogus=1", ["unknown config key 'bogus'"]),
        ("inner=3", ["inner", "mapping"]),
        ("noequals", ["key=value"]),
    ],
)
def test_bad_keys_and_types_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(Outer, None, [override])
    for w in words:
        assert w in str(e.value)


def test_missing_and_invalid_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, bad)


def test_dump_round_trips(tmp_path):
    cfg = load_config(Outer, None, ["inner.lr=0.25", "path=null"])
    p = dump_config(cfg, tmp_path / "out.yaml")
    again = load_config(Outer, p)
    assert to_dict(again) == to_dict(cfg)


def test_parse_override_types():
    assert parse_override("a=1") == ("a", 1)
    assert parse_override("a=0.5") == ("a", 0.5)
    assert parse_override("a=null") == ("a", None)
    assert parse_override("a.b=hello") == ("a.b", "hello")


def test_exponent_numbers_without_a_dot_are_numbers():
    # YAML 1.1 reads `1e-4` as a string; a user writing optim.lr=1e-4 means the number.
    from pipeline.stages import load_stage_config

    cfg = load_stage_config("train-student", None, ["optim.lr=1e-4", "optim.weight_decay=5E-5"], validate=False)
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (1e-4, 5e-5)
    with pytest.raises(ConfigError, match="optim.lr"):
        load_stage_config("train-student", None, ["optim.lr=fast"], validate=False)


def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, capsys):
    from pipeline.cli import main

    (tmp_path / "world.csv").write_text("path,label\nv.mp4,a\n")
    (tmp_path / "taken").write_text("not a folder")
    rc = main(["run", "train-student", f"manifest={tmp_path / 'world.csv'}", f"video_root={tmp_path}",
               f"out={tmp_path / 'taken'}", "loss.ego=0", "loss.object=0", "loss.hand_map=0", "loss.object_map=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err == [f"error: output folder {tmp_path / 'taken'} is a file; choose another --out"]
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_a_sections_defaults_come_from_its_default_factory_and_keys_override_them_one_by_one():
    """A nested section with a default_factory keeps the factory's values for the keys not given
    (it was once rebuilt from its class's defaults, silently)."""
    from dataclasses import dataclass, field

    from pipeline.config import load_config

    @dataclass
    class Inner:
        a: int = 1
        b: int = 2

    @dataclass
    class Outer:
        x: Inner = field(default_factory=lambda: Inner(a=10, b=20))
        y: Inner = field(default_factory=Inner)

    cfg = load_config(Outer, None, ["x.b=7"])
    assert (cfg.x.a, cfg.x.b, cfg.y.a, cfg.y.b) == (10, 7, 1, 2)
    assert load_config(Outer, None, []).x == Inner(10, 20)
