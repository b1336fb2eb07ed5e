"""Search-space YAML validation, the Architecture value and sampling from Optuna trials."""

import dataclasses
import json
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml

from nas.core.architecture import Architecture, ArchitectureError, StageChoice
from nas.tasks.spacefile import SpaceError, load_space

SPACES = sorted(Path(__file__).resolve().parent.parent.joinpath("spaces").glob("*.yaml"))
optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
backbone: resnet18
input_size: 64
stages:
  - stage: 3
    mechanisms:
      none:
      se: {reduction: [4, 16]}
      cbam: {r: 8, kernel_size: [3, 7]}
  - stage: 4
    mechanisms:
      none:
      eca: {k_size: [auto, 3]}
      simam:
"""


def test_shipped_spaces_are_valid():
    assert {p.name for p in SPACES} >= {"resnet.yaml", "resnet50.yaml", "mobilenetv3.yaml", "small.yaml"}
    for path in SPACES:
        space = load_space(path)
        assert space.count() > 1, path
        assert space.baseline().is_baseline


def test_space_counts_every_combination(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    # stage 3: none + se x2 + cbam x2 = 5; stage 4: none + eca x2 + simam = 4
    assert space.count() == 20
    archs = list(space.architectures())
    assert len(archs) == len(set(archs)) == 20
    assert all(a.stages[0].mechanism == "none" and a.stages[1].mechanism == "none" for a in archs)


def problems_of(tmp_path, text):
    with pytest.raises(SpaceError) as info:
        load_space(write(tmp_path, text))
    return info.value, str(info.value)


BAD_CASES = [
    # (yaml, [(key path, words in the message)])
    ("backbone: resnet19\nstages: []\n", [("backbone", "'resnet19' is not a timm model; did you mean resnet18")]),
    (
        GOOD.replace("se: {reduction: [4, 16]}", "sea: {reduction: 4}"),
        [("stages[0].mechanisms.sea", "unknown mechanism 'sea'; allowed: none, ")],
    ),
    (
        GOOD.replace("se: {reduction: [4, 16]}", "se: {reduction: 4, groups: 2}"),
        [("stages[0].mechanisms.se.groups", "unknown hyperparameter of se; allowed: reduction (r)")],
    ),
    (
        GOOD.replace("se: {reduction: [4, 16]}", "se: {reduction: [4, 512]}"),
        [("stages[0].mechanisms.se.reduction", "512 is not allowed at 256 channels (residual of stage 3)")],
    ),
    (
        GOOD.replace("se: {reduction: [4, 16]}", "sa: {}").replace("- stage: 3", "- stage: 1"),
        [("stages[0].mechanisms.sa.groups", "64 (the default) is not allowed at 64 channels")],
    ),
    (
        GOOD.replace("se: {reduction: [4, 16]}", "se: {reduction: []}"),
        [("stages[0].mechanisms.se.reduction", "empty list of choices")],
    ),
    (
        GOOD.replace("se: {reduction: [4, 16]}", "se: {reduction: sixteen}"),
        [("stages[0].mechanisms.se.reduction", "'sixteen' is not allowed; an integer >= 1")],
    ),
    (
        GOOD.replace("mechanisms:\n      none:\n      eca", "mechanisms: {}\n    x:\n      eca"),
        [("stages[1].mechanisms", "expected a non-empty mapping")],
    ),
    (
        GOOD.replace("- stage: 4", "- stage: 7"),
        [("stages[1].stage", "7 is not a stage of resnet18; its stages with blocks are 1, 2, 3, 4")],
    ),
    (GOOD.replace("- stage: 4", "- stage: 3"), [("stages[1].stage", "stage 3 is already described at stages[0]")]),
    (
        GOOD.replace("input_size: 64", "input_size: 64\ninput_size: 32"),
        [("", "duplicate key 'input_size' (first at line 3)")],
    ),
    (
        GOOD + "training: {epochs: 0, optimizer: lamb}\n",
        [
            ("training.epochs", "0 is not allowed"),
            ("training.optimizer", "'lamb' is not allowed; expected one of 'adamw', 'sgd'"),
        ],
    ),
    (
        GOOD + "latency: {device: gpu, rounds: 4}\nlimits: {max_latency_ms: -1}\n",
        [
            ("latency.device", "'gpu' is not allowed"),
            ("latency.rounds", "4 is not allowed; expected a number from 8 to 100,000"),
            ("limits.max_latency_ms", "-1 is not allowed"),
        ],
    ),
    (
        GOOD.replace("simam:", "simam: {placement: replace_conv3x3}"),
        [("stages[1].mechanisms.simam.placement", "only a selective kernel can replace the 3x3 convolution")],
    ),
    (
        GOOD + "objectives: [latency, params]\nstagez: 1\n",
        [("objectives", "expected accuracy and one of latency, params, flops"), ("stagez", "unknown key")],
    ),
]


@pytest.mark.parametrize("text,expected", BAD_CASES)
def test_each_problem_names_the_key_path_the_value_and_what_is_allowed(tmp_path, text, expected):
    err, message = problems_of(tmp_path, text)
    assert message.startswith(str(tmp_path / "space.yaml"))
    for path, words in expected:
        assert any(p.path == path and words in p.message for p in err.problems), (path, words, message)


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    text = (
        GOOD.replace("se: {reduction: [4, 16]}", "se: {reduction: [4, 512]}").replace(
            "eca: {k_size: [auto, 3]}", "eca: {k_size: [2]}"
        )
        + "training: {epochs: -3}\n"
    )
    err, message = problems_of(tmp_path, text)
    assert len(err.problems) == 3, message
    assert "3 problems" in message.splitlines()[0]
    assert all(p.line for p in err.problems), "each problem points at its line"


def test_lines_point_at_the_offending_key(tmp_path):
    err, message = problems_of(tmp_path, GOOD.replace("se: {reduction: [4, 16]}", "se: {reduction: [4, 512]}"))
    (problem,) = err.problems
    assert problem.line == 8 and "space.yaml:8: stages[0].mechanisms.se.reduction" in message


def test_spaces_with_sk_check_the_real_width_of_the_3x3(tmp_path):
    text = GOOD.replace("se: {reduction: [4, 16]}", "sk: {groups: [32, 48]}")
    err, message = problems_of(tmp_path, text)
    assert "48 is not allowed at 256 channels (replace_conv3x3 of stage 3)" in message


def test_builtin_attention_is_replaced_only_when_asked(tmp_path):
    text = """
    backbone: mobilenetv3_large_100
    input_size: 64
    stages:
      - stage: 2
        mechanisms: {none: , eca: {placement: post_conv3x3_act}}
    """
    err, message = problems_of(tmp_path, text)
    assert "already has SqueezeExcite at post_conv3x3_act; set 'replace_builtin: true'" in message
    space = load_space(write(tmp_path, text.replace("- stage: 2", "- stage: 2\n        replace_builtin: true")))
    assert {str(a.stages[2]) for a in space.architectures()} == {"!none", "!eca(k=auto)@post_conv3x3_act"}


@pytest.mark.parametrize(
    "text,words",
    [
        ("backbone: [unclosed\n", "not valid YAML"),
        (
            "!!python/object/apply:os.system ['echo hacked']\n",
            "YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed",
        ),
        ("backbone: !!python/name:os.system\n", "is not allowed: files are loaded safely"),
        ("- just\n- a list\n", "the file must be a mapping"),
    ],
)
def test_files_that_are_not_a_space_are_refused_clearly(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(Exception) as info:
        load_space(path)
    assert str(path) in str(info.value) and words in str(info.value)
    assert type(info.value).__name__ in ("SpaceError", "YamlError")


def test_missing_file_and_binary_file(tmp_path):
    with pytest.raises(Exception, match="no such file"):
        load_space(tmp_path / "nope.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(Exception, match="cannot be read as text"):
        load_space(tmp_path / "bin.yaml")


def test_pyyaml_exponent_numbers_are_read_as_numbers(tmp_path):
    space = load_space(
        write(tmp_path, GOOD.replace("simam:", "simam: {e_lambda: [1e-4, 0.1]}") + "limits: {max_params: 12e6}\n")
    )
    assert space.limits.max_params == 12e6
    lams = {dict(a.stages[3].hparams).get("e_lambda") for a in space.architectures()} - {None}
    assert lams == {1e-4, 0.1}


# ---------------------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------------------

STRINGS = [
    "resnet18|se(r=16)|none|cbam(r=8,k=7)|eca(k=3)",
    "resnet50|simam(lam=0.0001)|sk(r=16,L=32,g=32,M=2)|nam|cca(r=8,R=2)@residual",
    "mobilenetv3_large_100|none|eca(k=auto)|!none|!ca(r=32)@residual|!se(r=4)@post_conv3x3_act",
]


@pytest.mark.parametrize("text", STRINGS)
def test_architecture_string_round_trips_through_dict_json_yaml(text):
    arch = Architecture.parse(text)
    assert str(arch) == text
    assert Architecture.from_dict(arch.to_dict()) == arch
    assert Architecture.from_json(arch.to_json()) == arch
    assert Architecture.from_dict(yaml.safe_load(yaml.safe_dump(arch.to_dict()))) == arch
    assert json.loads(arch.to_json())["string"] == text
    assert hash(Architecture.parse(text)) == hash(arch) and len({arch, Architecture.parse(text)}) == 1


def test_defaults_are_filled_so_equal_architectures_have_one_string():
    a = Architecture.parse("resnet18|se|none|cbam(k=7)|eca")
    b = Architecture.parse("resnet18|se(reduction=16)|none|cbam(r=16,k=7)|eca(k=auto)@residual")
    assert a == b and str(a) == "resnet18|se(r=16)|none|cbam(r=16,k=7)|eca(k=auto)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.stages[0].mechanism = "cbam"


@pytest.mark.parametrize(
    "text,words",
    [
        ("resnet18", "not an architecture string"),
        ("resnet18|se(r=16", "is not 'name(key=value,...)'"),
        ("resnet18|foo(r=1)|none", "unknown attention mechanism 'foo'"),
        ("resnet18|se(q=1)|none", "unknown hyperparameter; se accepts: reduction (r)"),
        ("resnet18|se(r=abc)|none", "se: reduction='abc' is not allowed"),
        ("resnet18|eca(k=4)|none", "k_size=4 is not allowed"),
        ("resnet18|se(r=4)@middle|none", "placement 'middle' is unknown"),
        ("resnet18|none(r=1)|none", "'none' takes no arguments"),
        ("resnet18|se(r=4);import os|none", "is not 'name(key=value,...)'"),
        ("os.system('x')|none", "is not a model name"),
    ],
)
def test_bad_architecture_strings_are_refused(text, words):
    with pytest.raises(ArchitectureError, match=None) as info:
        Architecture.parse(text)
    assert words in str(info.value), str(info.value)


def test_from_dict_refuses_a_string_that_disagrees():
    d = Architecture.parse(STRINGS[0]).to_dict()
    d["string"] = "resnet18|none|none|none|none"
    with pytest.raises(ArchitectureError, match="disagrees"):
        Architecture.from_dict(d)


# ---------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------


def test_sampling_is_define_by_run_with_readable_conditional_names(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        arch = space.sample(trial)
        study.tell(trial, 0.0)
        seen.add(arch)
        s3, s4 = arch.stages[2], arch.stages[3]
        expected = {"stage3.mechanism", "stage4.mechanism"}
        if s3.mechanism == "se":
            expected.add("stage3.se.reduction")
        if s3.mechanism == "cbam":
            expected.add("stage3.cbam.kernel_size")  # reduction is fixed at 8: not a parameter
        if s4.mechanism == "eca":
            expected.add("stage4.eca.k_size")
        assert set(trial.params) == expected, (arch, trial.params)
        assert space.params_of(arch) == trial.params
    assert len(seen) >= 12, "random sampling should reach most of the 20 architectures"


def test_fixed_params_rebuild_the_same_architecture(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    for arch in space.architectures():
        assert space.sample(optuna.trial.FixedTrial(space.params_of(arch))) == arch


def test_stage_choice_validates_itself():
    with pytest.raises(ArchitectureError, match="'none' takes no hyperparameters"):
        StageChoice("none", (("reduction", 4),))
    assert StageChoice("cbam", (("r", 8),)).hparams == (("reduction", 8), ("kernel_size", 7))
