"""Issue 17, item 6: fuzzing with Hypothesis. `TrainConfig` validation, the CLI's argument parsing (every command's
parser, and `lenet train`'s flags through validation and the path checks), and image decoding (`open_image` +
`preprocess`, and `lenet predict` on the files). The property everywhere: a clear error (a LenetError of one
line; from the CLI, exit code 2 and one line) or a correct answer -- never a traceback.

Profiles: "lenet-fast" (FAST examples per test, derandomized so that CI runs the same examples every time) for
the fast suite; the `slow` copies of each test run "lenet-slow" (SLOW examples, random, a new search each run).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import string
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lenet.cli import build_parser, main
from lenet.cli.flags import flag_fields
from lenet.errors import ConfigError, ImageError
from lenet.trainer.config import (
    _INTEGERS,
    _REALS,
    MAX_SEED,
    TrainConfig,
    config_fields,
    config_from_dict,
    field_choices,
    resolve_config,
)

FAST, SLOW = 300, 500
_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("lenet-fast", max_examples=FAST, derandomize=True, database=None, **_COMMON)
settings.register_profile("lenet-slow", max_examples=SLOW, **_COMMON)
fast = settings(settings.get_profile("lenet-fast"))
slow = settings(settings.get_profile("lenet-slow"))

# --- values --------------------------------------------------------------------------------------------------

NUMBER_TEXTS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1e309", "1e-400", "-0", "-0.0", "0", "1", "-1",
                "0.5", "0.999999", "1.0", "1_000", " 3 ", "+5", "0x10", "1e3", "١٢", "", "--", "-", "True", "None",
                str(MAX_SEED), str(MAX_SEED + 1), str(2**64 - 1), str(2**64), "9" * 4301, "0." + "9" * 400]
number_texts = st.one_of(st.sampled_from(NUMBER_TEXTS), st.integers().map(str),
                         st.floats(allow_nan=True, allow_infinity=True).map(repr),
                         st.text(alphabet="0123456789.-+eE_ xn", max_size=12))
# Paths as a command line can carry them (no NUL). Control characters are left out: an error naming such a
# path would print it raw over two lines (the CLI's one-line rendering is the lead's, cli/__init__.py).
# Relative and without "..": the write checks of --out make (and remove) a file in the nearest existing folder,
# which must be the test's own.
_segments = st.text(alphabet=string.ascii_letters + string.digits + "._- é", min_size=1, max_size=8).filter(
    lambda name: name not in (".", "..") and not name.startswith("-"))
path_texts = st.lists(_segments, min_size=1, max_size=3).map("/".join)
any_value = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-2**80, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10), st.lists(st.integers(), max_size=3),
    st.tuples(st.floats(), st.floats()), st.sampled_from([10**5000, -(10**400), 2**63, 2**64, MAX_SEED]))


def field_values(f) -> st.SearchStrategy:
    """Values for one TrainConfig field: mostly of its kind and near its bounds, sometimes anything at all."""
    name = f.name
    choices = field_choices(f)
    if choices is not None:
        typical = st.sampled_from([*choices, "nope", ""])
    elif name in _INTEGERS:
        low, high = _INTEGERS[name]
        edges = [low - 1, low, low + 1] + ([high - 1, high, high + 1] if high is not None else [10**12])
        typical = st.one_of(st.sampled_from(edges), st.integers(min_value=-5, max_value=100))
    elif name in _REALS or name == "checkpoint_every":
        typical = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                            st.sampled_from([0, 0.0, -0.0, 1, 1.0, 0.999, 1e-300, 5e-324, 10**400]))
    elif name == "betas":
        typical = st.one_of(st.tuples(st.floats(), st.floats()), st.lists(st.floats(), max_size=3))
    elif name == "threads":
        typical = st.one_of(st.none(), st.integers(min_value=-2, max_value=10**6))
    elif name in ("nesterov", "deterministic", "compile"):
        typical = st.booleans()
    elif name == "extra":
        return st.just({})  # free-form options of plug-ins: their own code checks them
    else:
        typical = st.one_of(st.none(), path_texts)
    return st.one_of(typical, typical, typical, any_value)


config_values = st.fixed_dictionaries({}, optional={f.name: field_values(f) for f in config_fields()})


def assert_valid(cfg: TrainConfig) -> None:
    """A config that validation let through is one a run can use, and survives config.json unchanged."""
    for name, (low, high) in _INTEGERS.items():
        value = getattr(cfg, name)
        assert type(value) is int and low <= value and (high is None or value <= high), (name, value)
    for name in [*_REALS, "warmup_epochs", "checkpoint_every"]:
        assert math.isfinite(getattr(cfg, name)), name
    assert 0 <= cfg.momentum < 1 and 0 <= cfg.label_smoothing < 1 and cfg.lr > 0 and cfg.map_j > 0
    assert len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas)
    assert cfg.warmup_epochs <= cfg.epochs
    assert cfg.threads is None or cfg.threads >= 1
    text = json.dumps(cfg.to_dict(), allow_nan=False)
    assert config_from_dict(json.loads(text)) == cfg


def assert_one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message, message


# --- TrainConfig -----------------------------------------------------------------------------------------------

def check_config(values: dict) -> None:
    try:
        cfg = TrainConfig(**values)
    except ConfigError as e:
        assert_one_line(str(e))
        return
    assert_valid(cfg)


@fast
@given(config_values)
def test_train_config_validation(values):
    check_config(values)


@pytest.mark.slow
@slow
@given(config_values)
def test_train_config_validation_slow(values):
    check_config(values)


# --- `lenet train`'s flags, through parsing, validation and the path checks --------------------------------------

TRAIN_FLAGS = {f"--{f.name.replace('_', '-')}": f for f in flag_fields()}


@st.composite
def train_argv(draw) -> list[str]:
    argv = []
    for flag in draw(st.lists(st.sampled_from([*TRAIN_FLAGS, "--recipe", "--distort", "--resume", "--bogus"]),
                              max_size=6)):
        f = TRAIN_FLAGS.get(flag)
        if flag == "--distort" or (f is not None and f.metadata["type"] is bool):
            argv.append(flag)
        elif flag in ("--out", "--data-root", "--resume"):
            argv += [flag, draw(path_texts)]
        elif flag == "--recipe" or (f is not None and field_choices(f) is not None):
            argv += [flag, draw(st.sampled_from([*(field_choices(f) if f else ["fast", "paper"]), "nope"]))]
        elif f is not None and f.metadata["nargs"] == 2:
            argv += [flag, draw(number_texts), draw(number_texts)]
        else:
            argv += [flag, draw(number_texts)]
    return argv


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: usage, then one "lenet CMD: error:" line
            code = e.code
    return code, out.getvalue(), err.getvalue()


def check_train_argv(argv: list[str], folder: Path) -> None:
    resolved = []

    def resolve_only(*, progress_bar, command, **options):  # everything `lenet train` does before training
        resolved.append(resolve_config(**options))

    old = os.getcwd()
    os.chdir(folder)
    try:
        with mock.patch("lenet.api.train", resolve_only):
            code, _, err = run_cli(["train", *argv])
    finally:
        os.chdir(old)
    assert "Traceback" not in err
    if code == 0:
        assert resolved and err == ""
        assert_valid(resolved[0])
        assert_given_values(argv, resolved[0])
    else:
        assert code == 2, err
        assert err.splitlines()[-1].startswith(("lenet train: error: ", "lenet: error: ")), err
        if not err.startswith("usage:"):
            assert err.count("\n") == 1, err
    assert list(folder.iterdir()) == [], "a refused or checked run wrote into its folder"


def assert_given_values(argv: list[str], cfg: TrainConfig) -> None:
    """The run has the numbers it was given (the last of a repeated flag wins), unless resumed."""
    if "--resume" in argv:
        return
    given = {}
    for i, token in enumerate(argv):
        f = TRAIN_FLAGS.get(token)
        if f is not None and f.metadata["type"] in (int, float) and f.metadata["nargs"] is None:
            given[f.name] = f.metadata["type"](argv[i + 1])
    for name, value in given.items():
        assert getattr(cfg, name) == value, (name, value, getattr(cfg, name))


@pytest.fixture(scope="module")
def empty_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cwd")


@fast
@given(argv=train_argv())
def test_train_flags(empty_folder, argv):
    check_train_argv(argv, empty_folder)


@pytest.mark.slow
@slow
@given(argv=train_argv())
def test_train_flags_slow(empty_folder, argv):
    check_train_argv(argv, empty_folder)


# --- every command's parser ------------------------------------------------------------------------------------

PARSER = build_parser()
COMMAND_FLAGS = {name: [option for action in sub._actions for option in action.option_strings]
                 for name, sub in PARSER._subparsers._group_actions[0].choices.items()}


@st.composite
def any_argv(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMAND_FLAGS)))
    tokens = draw(st.lists(st.one_of(st.sampled_from(COMMAND_FLAGS[command]), number_texts, path_texts),
                           max_size=8))
    return [command, *tokens]


def check_parse(argv: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            PARSER.parse_args(argv)
        except SystemExit as e:
            assert e.code in (0, 2), err.getvalue()  # 0: --help
            if e.code == 2:
                last = err.getvalue().splitlines()[-1]
                assert last.startswith((f"lenet {argv[0]}: error: ", "lenet: error: ")), err.getvalue()


@fast
@given(any_argv())
def test_every_parser(argv):
    check_parse(argv)


@pytest.mark.slow
@slow
@given(any_argv())
def test_every_parser_slow(argv):
    check_parse(argv)


# --- image decoding: open_image + preprocess, and `lenet predict` on files -----------------------------------------

FORMATS = ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "ICO"]


@st.composite
def images(draw) -> bytes:
    """An encoded image of any mode, size and format (some lenet refuses), maybe truncated or with bytes
    flipped; or bytes that are no image at all."""
    import numpy as np
    from PIL import Image

    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=2000))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "1", "P", "LA", "I", "F", "CMYK", "I;16"]))
    width, height = draw(st.integers(1, 200)), draw(st.integers(1, 200))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    if draw(st.booleans()):  # a dark stroke on a light page, so that some images hold a digit-like blob
        pixels[:] = 230
        pixels[height // 4: 3 * height // 4 + 1, width // 3: width // 3 + max(1, width // 8)] = 20
    image = Image.fromarray(pixels).convert(mode)
    fmt = draw(st.sampled_from(FORMATS))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):  # this format cannot hold this mode
        image.convert("RGB").save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif damage == "flip" and data:
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data)


def check_decoding(data: bytes) -> None:
    """ImageError of one line, or a uint8 28x28 -- and no warning (the CLI would print it as two more lines)."""
    import warnings

    import torch

    from lenet.predict import open_image, preprocess

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tensor = preprocess(open_image(data))
        except ImageError as e:
            assert_one_line(str(e))
            tensor = None
    assert [str(w.message) for w in caught] == []
    assert tensor is None or (tensor.dtype == torch.uint8 and tuple(tensor.shape) == (28, 28))


@fast
@given(images())
def test_image_decoding(data):
    check_decoding(data)


@pytest.mark.slow
@slow
@given(images())
def test_image_decoding_slow(data):
    check_decoding(data)


@pytest.fixture(scope="module")
def network():
    from lenet.weights import load_network

    return load_network("seed")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("images")


def check_predict(data: bytes, options: list[str], folder: Path, network) -> None:
    path = folder / "image.png"
    path.write_bytes(data)
    with mock.patch("lenet.weights.load_network", lambda *args, **kwargs: network):
        code, out, err = run_cli(["predict", str(path), "--json", *options])
    assert "Traceback" not in err
    if code == 2:  # a bad option: one line, nothing predicted
        assert out == "" and err.splitlines()[-1].startswith("lenet predict: error: "), err
        return
    assert err == ""
    (result,) = [json.loads(line) for line in out.splitlines()]
    assert result["path"] == str(path)
    if "error" in result:
        assert code == 1
        assert_one_line(result["error"])
    elif "--number" in options:
        assert code == 0 and result["number"] == "".join(str(d["prediction"]) for d in result["digits"])
    else:
        assert code == 0 and result["prediction"] in range(10)
        assert len(result["probabilities"]) == 10 and abs(sum(result["probabilities"]) - 1) < 1e-4


predict_options = st.lists(st.one_of(st.just(["--number"]), st.tuples(st.just("--top-k"), number_texts).map(list),
                                     st.tuples(st.just("--device"), st.sampled_from(["cpu", "tpu", "", "CPU"])).map(
                                         list)), max_size=2).map(lambda groups: [t for g in groups for t in g])


@fast
@given(data=images(), options=predict_options)
def test_predict_on_files(image_folder, network, data, options):
    check_predict(data, options, image_folder, network)


@pytest.mark.slow
@slow
@given(data=images(), options=predict_options)
def test_predict_on_files_slow(image_folder, network, data, options):
    check_predict(data, options, image_folder, network)
