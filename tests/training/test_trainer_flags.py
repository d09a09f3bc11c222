"""Lightning's Trainer flags on a sweep: each works as Lightning documents it, or is refused in one
``error:`` line with exit status 2, before any data is read; never a traceback."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, cli_args, run_cli, write_cifar10
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_linear import CIFARDataModule, LinearClassifier
from lit_linear.cli import main

GRID = ["--model.lr", "[0.05, 0.4]", "--model.reg", "[0.0, 0.01]"]


def run_folder(root: Path) -> Path:
    return root / "lightning_logs" / "version_0"


def last_checkpoint(root: Path) -> dict:
    return torch.load(run_folder(root) / "checkpoints" / "last.ckpt", weights_only=True)


def sweep(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text())


def scalar_tags(folder: Path) -> list[str]:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return events.Tags()["scalars"]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def reference(cifar10_dir, tmp_path_factory) -> dict:
    """sweep.json of the plain fit (32-true, Lightning's defaults) that each flag is compared with."""
    root = tmp_path_factory.mktemp("reference")
    main(["fit", *GRID, *cli_args(cifar10_dir, root)])
    return sweep(run_folder(root))


@pytest.fixture
def matmul_precision():
    yield
    torch.set_float32_matmul_precision("highest")  # a process-wide setting: leave it as it was


def test_precision_64_true_trains_and_keeps_w_in_float64(cifar10_dir, tmp_path, reference):
    main(["fit", *GRID, *cli_args(cifar10_dir, tmp_path), "--trainer.precision", "64-true"])
    assert last_checkpoint(tmp_path)["state_dict"]["W"].dtype == torch.float64
    assert sweep(run_folder(tmp_path))["best"]["val_acc"] == pytest.approx(reference["best"]["val_acc"], abs=1 / 60)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_keeps_w_in_float32_and_reaches_the_float32_result(cifar10_dir, tmp_path, reference, precision):
    """On a CPU Lightning turns 16-mixed into bf16-mixed; the float16 products are tested in test_precision.py."""
    main(["fit", *GRID, *cli_args(cifar10_dir, tmp_path), "--trainer.precision", precision])
    ckpt = last_checkpoint(tmp_path)
    assert ckpt["state_dict"]["W"].dtype == torch.float32
    assert LinearClassifier.load(run_folder(tmp_path) / "best_model.pt").weight.dtype == torch.float32
    assert sweep(run_folder(tmp_path))["best"]["val_acc"] == pytest.approx(reference["best"]["val_acc"], abs=1 / 60)


def test_float32_matmul_precision_is_an_option(cifar10_dir, tmp_path, matmul_precision):
    main(["fit", *GRID, *cli_args(cifar10_dir, tmp_path), "--float32_matmul_precision", "high"])
    assert torch.get_float32_matmul_precision() == "high"
    assert "float32_matmul_precision: high" in (run_folder(tmp_path) / "config.yaml").read_text()


def test_learning_rate_monitor_logs_each_configs_rate_in_sgd_steps(cifar10_dir, tmp_path):
    main(
        [
            "fit",
            *GRID,
            *cli_args(cifar10_dir, tmp_path),
            "--trainer.callbacks",
            "LearningRateMonitor",
            "--trainer.log_every_n_steps",
            "10",
            "--model.lr_decay",
            "0.5",
            "--model.lr_decay_every",
            "20",
        ]
    )
    events = EventAccumulator(str(run_folder(tmp_path)), size_guidance={"scalars": 0})
    events.Reload()
    curve = events.Scalars("lr-GridSGD/lr=0.4,reg=0.01")
    assert [e.step for e in curve] == [0, 10, 20, 30]
    assert [e.value for e in curve] == pytest.approx([0.4, 0.4, 0.2, 0.2])
    assert sum(tag.startswith("lr-GridSGD/") for tag in events.Tags()["scalars"]) == 4


def test_enable_checkpointing_false_writes_no_checkpoint_but_the_sweep(cifar10_dir, tmp_path):
    main(["fit", *GRID, *cli_args(cifar10_dir, tmp_path), "--trainer.enable_checkpointing", "false"])
    folder = run_folder(tmp_path)
    assert not list(tmp_path.rglob("*.ckpt"))
    assert sweep(folder)["step"] == 40 and (folder / "best_model.pt").is_file()


def test_barebones_trains_with_no_logger_nor_checkpoint(cifar10_dir, tmp_path):
    args = cli_args(cifar10_dir, tmp_path)
    for option in ("--trainer.enable_progress_bar", "--trainer.enable_model_summary"):  # barebones refuses them set
        i = args.index(option)
        del args[i : i + 2]
    main(["fit", *GRID, *args, "--trainer.barebones", "true"])
    assert sweep(tmp_path)["step"] == 40 and (tmp_path / "best_model.pt").is_file()
    assert not list(tmp_path.rglob("*.ckpt")) and not (tmp_path / "lightning_logs").exists()


def test_logger_false_writes_no_tensorboard_run(cifar10_dir, tmp_path):
    main(["fit", *GRID, *cli_args(cifar10_dir, tmp_path), "--trainer.logger", "false"])
    assert sweep(tmp_path)["step"] == 40
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_csv_logger_records_the_validation_metrics(cifar10_dir, tmp_path):
    main(
        [
            "fit",
            *GRID,
            *cli_args(cifar10_dir, tmp_path),
            "--trainer.logger",
            "CSVLogger",
            "--trainer.logger.save_dir",
            str(tmp_path),
        ]
    )
    (metrics,) = tmp_path.rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    assert [int(float(r["step"])) for r in rows if r.get("val/acc")] == [20, 40]


def test_early_stopping_on_val_acc_stops_the_sweep(cifar10_dir, tmp_path):
    main(
        [
            "fit",
            *GRID,
            *cli_args(cifar10_dir, tmp_path, steps=200),
            "--trainer.callbacks",
            "EarlyStopping",
            "--trainer.callbacks.monitor",
            "val/acc",
            "--trainer.callbacks.mode",
            "max",
            "--trainer.callbacks.min_delta",
            "1.0",
            "--trainer.callbacks.patience",
            "0",
        ]
    )
    assert sweep(run_folder(tmp_path))["step"] == 40, "no improvement of a whole point at the second validation"


def test_a_users_own_model_checkpoint_is_kept(cifar10_dir, tmp_path):
    mine = tmp_path / "mine"
    main(
        [
            "fit",
            *GRID,
            *cli_args(cifar10_dir, tmp_path),
            "--trainer.callbacks",
            "ModelCheckpoint",
            "--trainer.callbacks.dirpath",
            str(mine),
            "--trainer.callbacks.monitor",
            "val/acc",
            "--trainer.callbacks.mode",
            "max",
        ]
    )
    (saved,) = mine.glob("*.ckpt")
    assert torch.load(saved, weights_only=True)["global_step"] in (20, 40)
    assert (run_folder(tmp_path) / "checkpoints" / "last.ckpt").is_file()


def test_a_users_model_checkpoint_every_n_steps_names_each_file_by_its_step_and_resumes_from_it(cifar10_dir, tmp_path):
    """The logged "step" (the metrics' x-axis) once named every later save after the last validation's step."""
    every = ["--trainer.callbacks", "ModelCheckpoint", "--trainer.callbacks.dirpath", str(tmp_path / "every")]
    every += ["--trainer.callbacks.every_n_train_steps", "10", "--trainer.callbacks.save_top_k", "-1"]
    main(["fit", *GRID, *cli_args(cifar10_dir, tmp_path / "straight", *every)])
    saved = {p.name: torch.load(p, weights_only=True)["global_step"] for p in (tmp_path / "every").glob("*.ckpt")}
    assert saved == {f"epoch=0-step={step}.ckpt": step for step in (10, 20, 30, 40)}
    mid = str(tmp_path / "every" / "epoch=0-step=30.ckpt")
    main(["fit", *GRID, *cli_args(cifar10_dir, tmp_path / "resumed"), "--ckpt_path", mid])
    W = [
        torch.load(run_folder(tmp_path / r) / "checkpoints" / "last.ckpt")["state_dict"]["W"]
        for r in ("straight", "resumed")
    ]
    assert torch.equal(*W)


def test_max_time_stops_the_fit(cifar10_dir, tmp_path):
    main(["fit", *GRID, *cli_args(cifar10_dir, tmp_path, steps=10**7), "--trainer.max_time", "00:00:00:02"])
    assert 0 < sweep(run_folder(tmp_path))["step"] < 10**7


@pytest.mark.parametrize(
    "flag",
    [
        ["--trainer.deterministic", "true"],
        ["--trainer.detect_anomaly", "true"],
        ["--trainer.num_sanity_val_steps", "2"],
        ["--trainer.log_every_n_steps", "1"],
        ["--trainer.inference_mode", "false"],
        ["--trainer.benchmark", "true"],
    ],
    ids=lambda flag: " ".join(flag),
)
def test_flags_that_change_nothing_a_sweep_computes(cifar10_dir, tmp_path, reference, flag):
    main(["fit", *GRID, *cli_args(cifar10_dir, tmp_path), *flag])
    assert sweep(run_folder(tmp_path)) == reference


def test_profiler_simple_reports_the_fit(cifar10_dir, tmp_path):
    main(
        [
            "fit",
            *GRID,
            *cli_args(cifar10_dir, tmp_path),
            "--trainer.profiler",
            "SimpleProfiler",
            "--trainer.profiler.dirpath",
            str(tmp_path),
            "--trainer.profiler.filename",
            "profile",
        ]
    )
    report = (tmp_path / "fit-profile.txt").read_text()
    assert "run_training_batch" in report and "optimizer_step" in report


REFUSED = [
    (["--trainer.gradient_clip_val", "0.5"], "trainer.gradient_clip_val"),
    (["--trainer.accumulate_grad_batches", "2"], "trainer.accumulate_grad_batches"),
    (
        ["--trainer.callbacks", "StochasticWeightAveraging", "--trainer.callbacks.swa_lrs", "0.01"],
        "StochasticWeightAveraging",
    ),
    (["--trainer.callbacks", "EMAWeightAveraging"], "EMAWeightAveraging"),
    (["--trainer.callbacks", "LearningRateFinder"], "LearningRateFinder"),
    (["--trainer.callbacks", "BatchSizeFinder"], "BatchSizeFinder"),
    (["--trainer.callbacks", "BackboneFinetuning"], "BackboneFinetuning"),
    (["--trainer.callbacks", "ModelPruning", "--trainer.callbacks.pruning_fn", "l1_unstructured"], "ModelPruning"),
    (["--trainer.callbacks", "SpikeDetection"], "SpikeDetection"),
    (["--trainer.precision", "bf16-true"], "bf16-mixed"),
    (["--trainer.precision", "16-true"], "16-mixed"),
    (["--trainer.max_epochs", "3"], "trainer.max_epochs"),
    (["--trainer.min_epochs", "2"], "trainer.min_epochs"),
    (["--trainer.min_steps", "60"], "trainer.min_steps"),
    (["--trainer.strategy", "fsdp"], "fsdp"),
    (["--trainer.callbacks", "RichProgressBar"], "rich"),
]


@pytest.mark.parametrize("flag, named", REFUSED, ids=[" ".join(flag[:2]) for flag, _ in REFUSED])
def test_a_flag_the_sweep_cannot_honour_is_refused_in_one_line_before_data_is_read(
    tmp_path, capsys, monkeypatch, flag, named
):
    looked = []
    monkeypatch.setattr(CIFARDataModule, "prepare_data", lambda self: looked.append("prepare_data"))
    monkeypatch.setattr(CIFARDataModule, "setup", lambda self, stage: looked.append("setup"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *GRID, *cli_args(tmp_path / "no-data-here", tmp_path / "run"), *flag])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (line,) = error_lines(err)
    assert named in line and "Traceback" not in err
    assert looked == []


def test_a_val_fraction_below_one_chunk_is_refused_in_one_line(cifar10_dir, tmp_path, capsys):
    """Lightning checks it once the data's size is known."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *GRID, *cli_args(cifar10_dir, tmp_path), "--trainer.limit_val_batches", "0.01"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (line,) = error_lines(err)
    assert "limit_val_batches" in line and "Traceback" not in err


def test_the_console_prints_no_line_the_user_cannot_act_on(cifar10_dir, tmp_path):
    result = run_cli(
        "fit",
        *GRID,
        *cli_args(cifar10_dir, tmp_path, steps=20, interval=20),
        "--trainer.enable_progress_bar",
        "true",
        "--trainer.callbacks",
        "LearningRateMonitor",
        "--trainer.log_every_n_steps",
        "10",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert "litlogger" not in console and "will override existing callbacks" not in console
    assert "Training: " in console, "the progress bar still shows"


# --- several processes and real data -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("precision, strategy", [("bf16-mixed", "ddp"), ("64-true", "ddp_spawn")])
def test_precision_under_two_processes_equals_one(cifar10_dir, tmp_path, precision, strategy):
    """Two processes, each started by one of Lightning's two CPU launchers (a script per process, or spawned),
    train the sweep of one device in that precision."""
    runs = {}
    for devices in (1, 2):
        root = tmp_path / f"devices{devices}"
        args = ["fit", *GRID, *cli_args(cifar10_dir, root), "--trainer.precision", precision]
        if devices == 1:
            main(args)
        else:
            result = run_cli(*args, "--trainer.devices", "2", "--trainer.strategy", strategy)
            assert result.returncode == 0, result.stderr[-3000:]
        runs[devices] = (sweep(run_folder(root)), last_checkpoint(root)["state_dict"]["W"])
    (one, w_one), (two, w_two) = runs[1], runs[2]
    assert w_two.dtype == w_one.dtype == (torch.float64 if precision == "64-true" else torch.float32)
    assert two["best"] == pytest.approx(one["best"])
    assert [c["val_acc"] for c in two["configs"]] == pytest.approx([c["val_acc"] for c in one["configs"]], abs=1e-9)


@pytest.mark.slow
def test_bf16_mixed_reaches_the_float32_result_of_the_shipped_sweep(tmp_path_factory):
    """configs/softmax_sweep.yaml (150 steps) on a synthetic stand-in for CIFAR-10 with 2,000 noisier
    images, 400 of them for validation (benchmarks/precision.py measures it on the real data set)."""
    data = write_cifar10(tmp_path_factory.mktemp("noisy"), per_batch=400, num_test=10, noise=50.0)
    best = {}
    for precision in ("32-true", "bf16-mixed"):
        root = tmp_path_factory.mktemp(precision)
        main(
            [
                "fit",
                "--config",
                str(REPO / "configs" / "softmax_sweep.yaml"),
                *cli_args(data, root, steps=150, interval=50),
                "--data.batch_size",
                "200",
                "--trainer.precision",
                precision,
            ]
        )
        best[precision] = sweep(run_folder(root))["best"]["val_acc"]
    assert 0.3 < best["32-true"] < 0.95, "a stand-in that is neither trivial nor hopeless"
    assert best["bf16-mixed"] == pytest.approx(best["32-true"], abs=0.005 + 1 / 400)


@pytest.mark.parametrize(
    "capability, precision, matmul, hinted",
    [
        ((8, 0), "32-true", "highest", True),
        ((7, 0), "32-true", "highest", False),
        ((8, 0), "bf16-mixed", "highest", False),
        ((8, 0), "32-true", "high", False),
    ],
)
def test_a_gpu_with_tensor_cores_is_told_the_option_that_uses_them(
    monkeypatch, matmul_precision, capability, precision, matmul, hinted
):
    """Lightning's hint names torch.set_float32_matmul_precision, which a command line cannot call: the CLI names
    its option."""
    from types import SimpleNamespace

    from lit_linear.cli import console

    said = []
    monkeypatch.setattr(console, "rank_zero_info", said.append)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a GPU")
    torch.set_float32_matmul_precision(matmul)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)), precision=precision)
    console.hint_tensor_cores(trainer)
    assert bool(said) == hinted and all("--float32_matmul_precision high" in line for line in said)
