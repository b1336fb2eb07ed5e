"""Shared test helpers."""

from pathlib import Path

import torch

import attention

# Hyperparameters that make every mechanism valid (and well-conditioned) at the small channel counts the tests use
# (the official defaults need more channels: ShuffleAttention groups=64 needs C % 128 == 0,
# Selective Kernel groups=32 needs C % 32 == 0).
SMALL_C = 32
SMALL_HP = {
    "sa": {"groups": 4},
    "sk": {"groups": 8},
    # 8 hidden units instead of 2, so random weights cannot leave every ReLU unit dead
    "se": {"reduction": 4},
    "cbam": {"reduction": 4},
    "soca": {"reduction": 4},
}
NAMES = list(attention.MECHANISMS)


def small(name: str, channels: int = SMALL_C, **kw) -> torch.nn.Module:
    return attention.create(name, channels, **{**SMALL_HP.get(name, {}), **kw})


def randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Random values for every parameter and BN running statistic, so no gate is at an identity or
    zero initialisation (CBAM's spatial BN weight, SA's weights and CCA's gamma start at 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * scale)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen, dtype=torch.float64).to(b.dtype) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen, dtype=torch.float64).to(b.dtype) * 0.1)
    return module


class Ran:
    """What a run of the command line left: exit code and output, as ``subprocess.run`` reports them."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def __repr__(self) -> str:
        return f"Ran({self.returncode}, stdout={self.stdout[-500:]!r}, stderr={self.stderr[-2000:]!r})"


def run_nas(*args, cwd=None, env=None, width: int = 400) -> Ran:
    """``nas ARGS`` in this process, as a user's shell would run it: the exit code, what went to
    stdout and stderr (rich output at ``width`` columns), run in ``cwd`` with ``env`` added to the
    environment. An error the command line does not turn into a message ends in a traceback on stderr
    and exit code 1, as ``python -m nas`` would. The process's working folder, environment and torch
    thread count are restored afterwards."""
    import contextlib
    import io
    import os
    import traceback

    from nas import cli
    from nas.cli.console import console, err_console

    out, err = io.StringIO(), io.StringIO()
    saved = (os.getcwd(), dict(os.environ), console._width, err_console._width, torch.get_num_threads())
    try:
        if cwd is not None:
            os.chdir(cwd)
        os.environ.update({"COLUMNS": str(width), **(env or {})})
        console.width = err_console.width = width
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.run([str(a) for a in args])
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved[0])
        os.environ.clear()
        os.environ.update(saved[1])
        console._width, err_console._width = saved[2], saved[3]
        torch.set_num_threads(saved[4])
    return Ran(code, out.getvalue(), err.getvalue())


def space_file(
    folder,
    name: str = "tiny",
    *,
    stages: dict | None = None,
    data: dict | None = None,
    training: dict | None = None,
    **top,
) -> Path:
    """A search space on the embedded digits data (resnet10t at 32x32, one channel, quick latency: 16
    paired rounds, not 80; two noise seeds), written to ``folder/<name>.yaml``. ``stages`` (stage index
    -> mechanisms) replaces the default stages; ``data`` and ``training`` change the default sections
    key by key; any other top-level key (``limits``, ``objectives``, ...) is added as given."""
    import yaml

    doc = {
        "name": name,
        "backbone": "resnet10t",
        "input_size": 32,
        "in_chans": 1,
        "data": {"source": "digits", "train": 256, "val": 128, "test": 32, **(data or {})},
        "stages": [
            {"stage": i, "mechanisms": m}
            for i, m in (
                stages or {4: {"none": None, "se": {"reduction": [4, 16]}, "eca": {"k_size": [3, 5]}, "simam": None}}
            ).items()
        ],
        # two noise seeds, not the default three: the floor is measured (a spread needs two), at one
        # baseline fit less per search
        "training": {"epochs": 3, "batch_size": 64, "noise_seeds": 2, **(training or {})},
        "latency": {"input_size": 32, "repeats": 5, "warmup": 1, "rounds": 16},
        **top,
    }
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def from_terminal(cmd, **kwargs):
    """``cmd`` started as from a terminal (SIGINT at its default, which a test runner may have
    changed), its output captured as text unless ``kwargs`` say otherwise: for tests that press Ctrl-C."""
    import signal
    import subprocess

    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **kwargs}
    return subprocess.Popen(cmd, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **options)


class Polled:
    """Study ``name`` at ``url`` as a test polls it while a search runs: loaded once it exists (a load
    costs about 60 ms of CPU, a read of its trials about 2 ms), and again after an error (the study not
    created yet, the database server restarted)."""

    def __init__(self, name: str, url: str):
        self.name, self.url, self.study = name, url, None

    def trials(self, **kwargs):
        """The study's trials (``get_trials(deepcopy=False, **kwargs)``), or None after an error."""
        import optuna

        try:
            self.study = self.study or optuna.load_study(study_name=self.name, storage=self.url)
            return self.study.get_trials(deepcopy=False, **kwargs)
        except Exception:
            self.study = None
            return None

    def state(self, number: int):
        """Trial ``number``'s state, or None after an error."""
        trials = self.trials()
        return trials[number].state if trials else None
