"""SweepTensorBoard, read back with TensorBoard's own readers and its HParams plugin backend.

One small CIFAR-10 fit (a 3 x 2 grid whose lr=1e6 row diverges, 40 steps, validation every 20) is
shared by most tests; a CIFAR-100 fit with an explicit ``TensorBoardLogger`` and a fit with
``--trainer.logger false`` check the rest.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import struct
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import CIFAR10_NAMES, REPO, cli_args, table_rows
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator, event_file_loader, plugin_event_multiplexer
from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.util import tensor_util
from werkzeug.test import Client

from lit_linear.callbacks.tensorboard.callback import SweepTensorBoard
from lit_linear.callbacks.tensorboard.sessions import trial_names
from lit_linear.callbacks.tensorboard.templates import grid_shape, template_grid
from lit_linear.cli import main
from lit_linear.data.cifar import CIFAR100_CLASSES
from lit_linear.data.cifar_module import CIFARDataModule
from lit_linear.errors import ConfigError
from lit_linear.features.classifier import LinearClassifier
from lit_linear.sweep.configs import LogUniform, config_name, sweep_configs
from lit_linear.training.module import LinearClassifierModule

with warnings.catch_warnings():  # TensorBoard's vendored bleach warns about html5lib on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from tensorboard.plugins.hparams.hparams_plugin import HParamsPlugin

pytestmark = pytest.mark.slow

LRS, REGS = [0.05, 0.2, 1e6], [1e-4, 1e-3]
CONFIGS = [(lr, reg) for lr in LRS for reg in REGS]  # lr-major, as the module orders them
STEPS, INTERVAL, BATCH = 100, 50, 20  # trainer.val_check_interval counts SGD steps
SCALE = 3  # SweepTensorBoard's default template_scale
# Every session carries these; the dashboard lists the first three, the ones that differ between configs.
LISTED = ["lr", "reg", "status"]
HPARAM_KEYS = {*LISTED, "loss", "batch_size", "max_steps", "lr_decay", "lr_decay_every", "weight_scale", "dataset"}
METRIC_TAGS = ["acc/val", "steps", "loss/train", "acc/train"]  # the first colours the parallel-coordinates view
ALL = {"images": 0, "scalars": 0, "tensors": 0}  # keep every event


def _fit(data_dir: Path, root: Path, *extra: str, lrs=LRS, regs=REGS):
    # The schedule is pinned so that the hparams checked below do not follow the shipped config's tuning.
    grid = [
        "--model.lr",
        json.dumps(lrs),
        "--model.reg",
        json.dumps(regs),
        "--model.lr_decay",
        "0.85",
        "--model.lr_decay_every",
        "100",
    ]
    extra = (*grid, *extra)
    args = [
        "fit",
        "--config",
        str(REPO / "configs" / "softmax_sweep.yaml"),
        *cli_args(data_dir, root, *extra, steps=STEPS, interval=INTERVAL),
    ]
    main(args)


def _accumulator(run_dir: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance=ALL)
    acc.Reload()
    return acc


def _decode(image_event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image_event.encoded_image_string)).convert("RGB"))


def _text(acc: event_accumulator.EventAccumulator, tag: str) -> str:
    return tensor_util.make_ndarray(acc.Tensors(tag)[-1].tensor_proto).reshape(-1)[0].decode()


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def sweep(cifar10_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("tb_sweep")
    _fit(cifar10_dir, root)
    log_dir = root / "lightning_logs" / "version_0"
    summary = json.loads((log_dir / "sweep.json").read_text())
    ckpt = torch.load(log_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {"root": root, "log_dir": log_dir, "summary": summary, "W": ckpt["state_dict"]["W"]}


@pytest.fixture(scope="module")
def runs(sweep):
    return {name: _accumulator(sweep["log_dir"] / name) for name in (config_name(lr, reg) for lr, reg in CONFIGS)}


@pytest.fixture(scope="module")
def main_run(sweep):
    return _accumulator(sweep["log_dir"])


def test_one_run_folder_per_config(sweep):
    folders = {p.name for p in sweep["log_dir"].iterdir() if p.is_dir()} - {"checkpoints"}
    assert folders == {config_name(lr, reg) for lr, reg in CONFIGS}
    assert [(c["lr"], c["reg"]) for c in sweep["summary"]["configs"]] == CONFIGS
    statuses = [c["status"] for c in sweep["summary"]["configs"]]
    assert statuses == ["ok"] * 4 + ["diverged"] * 2  # lr=1e6 diverges within a few steps


def test_per_config_scalars_at_every_validation(sweep, runs):
    for k, (lr, reg) in enumerate(CONFIGS):
        acc = runs[config_name(lr, reg)]
        assert set(acc.Tags()["scalars"]) == {"acc/train", "acc/val", "loss/train", "steps"}
        # the HParams metric "steps trained", logged once, with the config's session
        assert [(e.step, e.value) for e in acc.Scalars("steps")] == [(STEPS, STEPS)]
        final = sweep["summary"]["configs"][k]
        for tag, key in (("acc/train", "train_acc"), ("acc/val", "val_acc"), ("loss/train", "train_loss")):
            events = acc.Scalars(tag)
            assert [e.step for e in events] == [INTERVAL, STEPS], (lr, reg, tag)
            last = events[-1].value
            if final[key] is None:  # a diverged config's non-finite loss is null in sweep.json
                assert final["status"] == "diverged" and not math.isfinite(last)
            else:
                assert last == pytest.approx(final[key], rel=1e-6), (lr, reg, tag)
        assert 0.0 <= acc.Scalars("acc/val")[-1].value <= 1.0


def test_main_run_best_val_acc(sweep, main_run):
    events = main_run.Scalars("val/acc")
    assert len(events) == STEPS // INTERVAL
    assert events[-1].value == pytest.approx(sweep["summary"]["best"]["val_acc"], rel=1e-6)
    assert {"train/acc", "train/loss"} <= set(main_run.Tags()["scalars"])
    # only the module's few per-validation metrics: no per-config or per-step scalars in the main run
    assert not {"acc/train", "acc/val", "loss/train"} & set(main_run.Tags()["scalars"])


def test_best_templates_at_every_validation(sweep, main_run):
    events = main_run.Images("best/templates")
    assert [e.step for e in events] == [INTERVAL, STEPS]
    height, width = grid_shape(10, SCALE)
    assert all((e.height, e.width) == (height, width) for e in events)
    # the last one is exactly the best config's final W drawn by template_grid: 2 x 5 labelled tiles
    best_config = sweep["summary"]["best"]
    best = CONFIGS.index((best_config["lr"], best_config["reg"]))
    expected = _hwc(template_grid(sweep["W"][:, best, :], CIFAR10_NAMES, SCALE))
    np.testing.assert_array_equal(_decode(events[-1]), expected)
    classifier = LinearClassifier.load(sweep["log_dir"] / "best_model.pt")
    np.testing.assert_array_equal(expected, _hwc(template_grid(classifier.weight, CIFAR10_NAMES, SCALE)))


def test_every_config_templates_at_end(sweep, runs):
    for k, (lr, reg) in enumerate(CONFIGS):
        acc = runs[config_name(lr, reg)]
        if sweep["summary"]["configs"][k]["status"] == "diverged":
            assert "templates" not in acc.Tags()["images"]  # no picture of non-finite weights
            continue
        events = acc.Images("templates")
        assert [e.step for e in events] == [STEPS]
        # config k's own weights, in config k's folder
        expected = _hwc(template_grid(sweep["W"][:, k, :], CIFAR10_NAMES, SCALE))
        np.testing.assert_array_equal(_decode(events[0]), expected)


def _record_count(path: Path) -> int:
    """Records in an event file, found by walking their length headers (8-byte length, 4-byte CRC)."""
    data, offset, count = path.read_bytes(), 0, 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        offset += 8 + 4 + length + 4  # length, its CRC, the event, its CRC
        count += 1
    assert offset == len(data), path
    return count


def _events(run_dir: Path) -> list[event_pb2.Event]:
    """Every event of the run's one event file, read by TensorBoard's own record reader."""
    (path,) = run_dir.glob("events.out.tfevents.*")
    events = [event_pb2.Event.FromString(r) for r in event_file_loader.RawEventFileLoader(str(path)).Load()]
    # The reader stops quietly at the first record whose checksum fails: all of them must read back.
    assert len(events) == _record_count(path), path
    return events


def test_template_pngs_decode_to_template_grid(sweep):
    """Each config's ``templates`` PNG, read back record by record, is exactly its W's grid."""
    for k, (lr, reg) in enumerate(CONFIGS):
        events = _events(sweep["log_dir"] / config_name(lr, reg))
        images = [(e.step, v.image) for e in events for v in e.summary.value if v.tag == "templates"]
        if sweep["summary"]["configs"][k]["status"] == "diverged":
            assert images == []
            continue
        ((step, image),) = images
        assert step == STEPS
        expected = template_grid(sweep["W"][:, k, :], CIFAR10_NAMES, SCALE)  # (3, H, W)
        assert (image.height, image.width, image.colorspace) == (*expected.shape[1:], 3)
        np.testing.assert_array_equal(_decode(image), _hwc(expected), err_msg=config_name(lr, reg))
    _events(sweep["log_dir"])  # the main run's records, best/templates among them, checksum too


def test_config_and_results_as_text(sweep, main_run):
    # the tags the Text dashboard shows are the README's names, with no "/text_summary" added
    assert set(main_run.PluginTagToContent("text")) == {"config", "sweep/results"}
    config = _text(main_run, "config")
    assert "loss: softmax" in config and "SweepTensorBoard" in config and f"max_steps: {STEPS}" in config
    results = _text(main_run, "sweep/results")
    assert results.startswith("| lr | reg |")
    rows = results.splitlines()[2:]  # after the header and the separator, one row per config
    # a grid keeps its lr x reg order
    assert [r.split(" | ")[:2] for r in rows] == [[f"| {lr:.3e}", f"{reg:.3e}"] for lr, reg in CONFIGS]
    assert results.count("(best)") == 1 and results.count("diverged") == 2
    assert main_run.Tensors("sweep/results")[-1].step == STEPS


def test_exactly_one_hparams_session_per_config(sweep, runs, main_run):
    with pytest.raises(KeyError):
        main_run.PluginTagToContent(metadata.PLUGIN_NAME)  # the main run has no hparams data at all
    for k, (lr, reg) in enumerate(CONFIGS):
        name = config_name(lr, reg)
        acc = runs[name]
        assert len(acc.Tensors(metadata.SESSION_START_INFO_TAG)) == 1
        assert len(acc.Tensors(metadata.SESSION_END_INFO_TAG)) == 1
        content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        hp = start.hparams
        assert set(hp) == HPARAM_KEYS, name  # the same keys in every session
        assert start.group_name == trial_names(CONFIGS)[k]  # the Trial ID: short enough to read in full
        assert hp["lr"].number_value == lr and hp["reg"].number_value == reg
        assert hp["status"].string_value == sweep["summary"]["configs"][k]["status"]
        assert hp["loss"].string_value == "softmax" and hp["dataset"].string_value == "cifar10"
        assert hp["batch_size"].number_value == BATCH and hp["max_steps"].number_value == STEPS
        assert hp["lr_decay"].number_value == 0.85 and hp["lr_decay_every"].number_value == 100
        end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        diverged = sweep["summary"]["configs"][k]["status"] == "diverged"
        assert end.status == (api_pb2.STATUS_FAILURE if diverged else api_pb2.STATUS_SUCCESS), name


def _hparams_client(logdir: Path) -> Client:
    """TensorBoard's HParams plugin over a multiplexer of ``logdir``, as ``tensorboard --logdir`` serves it."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    context = base_plugin.TBContext(
        logdir=str(logdir), multiplexer=multiplexer, data_provider=MultiplexerDataProvider(multiplexer, str(logdir))
    )
    apps = HParamsPlugin(context).get_plugin_apps()
    return {route: Client(app) for route, app in apps.items()}


def _post(client: Client, body: dict) -> dict:
    response = client.post("/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    return json.loads(response.get_data(as_text=True))


ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def test_hparams_dashboard_lists_every_config(sweep):
    clients = _hparams_client(sweep["root"])  # the run root, as the README tells users to start TensorBoard
    experiment = _post(clients["/experiment"], {})
    # only what differs between configs takes a column: the settings they share are in the config text
    infos = experiment["hparamInfos"]
    assert [h["name"] for h in infos] == LISTED
    assert infos[0]["domainInterval"] == {"minValue": min(LRS), "maxValue": max(LRS)}
    assert infos[1]["domainInterval"] == {"minValue": min(REGS), "maxValue": max(REGS)}
    assert infos[2]["domainDiscrete"] == ["ok", "stopped", "diverged"] and infos[2]["type"] == "DATA_TYPE_STRING"
    assert [m["name"]["tag"] for m in experiment["metricInfos"]] == METRIC_TAGS
    assert experiment["metricInfos"][1]["displayName"] == "steps trained"

    body = {"allowedStatuses": ALL_STATUSES, "startIndex": 0, "sliceSize": 100}
    groups = _post(clients["/session_groups"], body)["sessionGroups"]
    assert len(groups) == len(CONFIGS)
    by_config = {(g["hparams"]["lr"], g["hparams"]["reg"]): g for g in groups}
    assert set(by_config) == set(CONFIGS)
    for k, (lr, reg) in enumerate(CONFIGS):
        group = by_config[(lr, reg)]
        assert [s["name"] for s in group["sessions"]] == [f"lightning_logs/version_0/{config_name(lr, reg)}"]
        final = sweep["summary"]["configs"][k]
        status = group["sessions"][0]["status"]
        assert status == ("STATUS_FAILURE" if final["status"] == "diverged" else "STATUS_SUCCESS")
        values = {m["name"]["tag"]: m for m in group["metricValues"]}
        assert values["acc/val"]["value"] == pytest.approx(final["val_acc"], rel=1e-6)
        assert values["acc/val"]["trainingStep"] == STEPS
        assert values["acc/train"]["value"] == pytest.approx(final["train_acc"], rel=1e-6)
        assert values["steps"]["value"] == STEPS and group["hparams"]["status"] == final["status"]


# --- a search: 9 configs drawn, halved 9 -> 3 -> 1 at the validations of steps 20 and 40 ---------------
SEARCH = ["--model.lr", "{low: 0.001, high: 0.5}", "--model.reg", "{low: 1.0e-4, high: 0.1}"]
SEARCH += ["--model.num_configs", "9", "--model.halving_factor", "3"]
SEARCH_STEPS, SEARCH_INTERVAL = 60, 20


def _search(data_dir: Path, root: Path, steps: int) -> tuple[Path, str]:
    """Fit the search for ``steps``: its run folder and what it printed."""
    config = str(REPO / "configs" / "softmax_search.yaml")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["fit", "--config", config, *SEARCH, *cli_args(data_dir, root, steps=steps, interval=SEARCH_INTERVAL)])
    return root / "lightning_logs" / "version_0", printed.getvalue()


def _weights(log_dir: Path) -> torch.Tensor:
    return torch.load(log_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]["W"]


@pytest.fixture(scope="module")
def search(cifar10_dir, tmp_path_factory):
    log_dir, printed = _search(cifar10_dir, tmp_path_factory.mktemp("tb_search"), SEARCH_STEPS)
    # The same search fitted up to the first halving's step: the last validation of a fit does not halve,
    # so its checkpoint holds every config's weights as that halving found them.
    first, _ = _search(cifar10_dir, tmp_path_factory.mktemp("tb_search_first"), SEARCH_INTERVAL)
    summary = json.loads((log_dir / "sweep.json").read_text())
    configs = [(c["lr"], c["reg"]) for c in summary["configs"]]
    return {"log_dir": log_dir, "printed": printed, "summary": summary, "configs": configs, "W_first": _weights(first)}


def _reached(config: dict) -> int:
    """The step a config of the search trained to (sweep.json's entry)."""
    return config["stopped_at"] or SEARCH_STEPS


def test_each_search_session_says_how_its_config_ended(search):
    ended = sorted((c["status"], c["stopped_at"] or 0) for c in search["summary"]["configs"])
    assert ended == [("ok", 0)] + [("stopped", 20)] * 6 + [("stopped", 40)] * 2
    for (lr, reg), final in zip(search["configs"], search["summary"]["configs"]):
        acc = _accumulator(search["log_dir"] / config_name(lr, reg))
        content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        reached = _reached(final)
        # a stopped config reads as stopped, with the step it stopped at; the survivor reads ok
        assert start.hparams["status"].string_value == final["status"], (lr, reg)
        assert [(e.step, e.value) for e in acc.Scalars("steps")] == [(reached, reached)]
        assert max(e.step for e in acc.Scalars("acc/val")) == reached
        # written when the config ended, at its halving, and ended as a success: halving is no failure
        assert [e.step for e in acc.Tensors(metadata.SESSION_START_INFO_TAG)] == [reached]
        assert end.status == api_pb2.STATUS_SUCCESS


def test_hparams_dashboard_filters_and_sorts_a_search_by_how_configs_ended(search):
    clients = _hparams_client(search["log_dir"].parent.parent)
    experiment = _post(clients["/experiment"], {})
    lrs = [lr for lr, _ in search["configs"]]
    assert [h["name"] for h in experiment["hparamInfos"]] == LISTED and all(
        h["differs"] for h in experiment["hparamInfos"]
    )
    assert experiment["hparamInfos"][0]["domainInterval"] == {"minValue": min(lrs), "maxValue": max(lrs)}
    # what the dashboard asks for when a user unticks "ok" and sorts by "steps trained"
    stopped = {"hparam": "status", "filterDiscrete": ["stopped"]}
    by_steps = {"metric": {"tag": "steps"}, "order": "ORDER_DESC"}
    body = {"allowedStatuses": ALL_STATUSES, "colParams": [stopped, by_steps], "startIndex": 0, "sliceSize": 100}
    groups = _post(clients["/session_groups"], body)["sessionGroups"]
    steps = [next(m["value"] for m in g["metricValues"] if m["name"]["tag"] == "steps") for g in groups]
    assert steps == [40, 40, 20, 20, 20, 20, 20, 20]
    stopped_configs = {(c["lr"], c["reg"]) for c in search["summary"]["configs"] if c["status"] == "stopped"}
    assert {(g["hparams"]["lr"], g["hparams"]["reg"]) for g in groups} == stopped_configs
    assert {g["hparams"]["status"] for g in groups} == {"stopped"}


def test_a_stopped_config_gets_its_templates_at_its_stop(search):
    survivor = _weights(search["log_dir"])  # (D, 1, C): W holds the one config that reached the end
    for k, ((lr, reg), final) in enumerate(zip(search["configs"], search["summary"]["configs"])):
        events = _accumulator(search["log_dir"] / config_name(lr, reg)).Images("templates")
        assert [e.step for e in events] == [_reached(final)], (lr, reg)
        if final["stopped_at"] == SEARCH_INTERVAL:  # its weights as the halving at step 20 found them
            expected = template_grid(search["W_first"][:, k, :], CIFAR10_NAMES, SCALE)
        elif final["status"] == "ok":
            expected = template_grid(survivor[:, 0, :], CIFAR10_NAMES, SCALE)
        else:
            continue  # stopped at 40: no checkpoint here holds its weights of then
        np.testing.assert_array_equal(_decode(events[0]), _hwc(expected), err_msg=config_name(lr, reg))


def test_time_series_opens_on_every_configs_accuracy_and_the_best_templates(search):
    """TensorBoard's Time Series page, the one that ticks every run of a search (other pages tick none above
    40 runs), sorts the tags by name, groups them by their first part and opens the first two groups."""
    tags = set()
    for run in [search["log_dir"], *(search["log_dir"] / config_name(lr, reg) for lr, reg in search["configs"])]:
        found = _accumulator(run).Tags()
        tags |= set(found["scalars"]) | set(found["images"])
    groups = sorted({tag.split("/")[0] for tag in tags})
    assert groups[:2] == ["acc", "best"]
    assert {tag for tag in tags if tag.split("/")[0] in groups[:2]} == {"acc/train", "acc/val", "best/templates"}


def test_a_search_results_table_is_best_first(search):
    """In the console and in ``sweep/results``: as halving ranked them (further first), then by val accuracy,
    ties by train loss; sweep.json keeps the order the configs were drawn in."""
    configs = search["summary"]["configs"]
    ranked = sorted(configs, key=lambda c: (-_reached(c), -c["val_acc"], c["train_loss"]))
    best = search["summary"]["best"]
    assert (ranked[0]["lr"], ranked[0]["reg"]) == (best["lr"], best["reg"])
    title, rows = table_rows(search["printed"])
    assert title == "softmax sweep: 9 configs after 60 steps"
    assert [row[:2] for row in rows] == [[f"{c['lr']:.3e}", f"{c['reg']:.3e}"] for c in ranked]
    assert [row[5:7] for row in rows] == [[c["status"], str(c["stopped_at"] or "-")] for c in ranked]
    assert rows[0][-2:] == ["<-", "best"] and sum(row[-1] == "best" for row in rows) == 1
    markdown = _text(_accumulator(search["log_dir"]), "sweep/results").splitlines()
    assert markdown[0] == "| lr | reg | train acc | val acc | train loss | status | stopped at |"
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown[2:]]
    assert [row[:2] for row in cells] == [row[:2] for row in rows]
    assert [row[5:] for row in cells] == [
        [row[5] + (" **(best)**" if row[-1] == "best" else ""), row[6]] for row in rows
    ]
    drawn = sweep_configs(LogUniform(1e-3, 0.5), LogUniform(1e-4, 0.1), 9, seed=0)  # seed_everything: 0
    assert search["configs"] == drawn


@pytest.fixture(scope="module")
def cifar100_sweep(cifar100_dir, tmp_path_factory):
    """CIFAR-100 with a user-given TensorBoardLogger (its default_hp_metric=True)."""
    root = tmp_path_factory.mktemp("tb_cifar100")
    _fit(
        cifar100_dir,
        root,
        "--data.dataset",
        "cifar100",
        "--trainer.logger",
        "lightning.pytorch.loggers.TensorBoardLogger",
        "--trainer.logger.save_dir",
        str(root),
        lrs=[0.1, 0.2],
        regs=[1e-3],
    )
    return root / "lightning_logs" / "version_0"


def test_cifar100_templates_are_a_10x10_grid(cifar100_sweep):
    events = _accumulator(cifar100_sweep).Images("best/templates")
    assert (events[-1].height, events[-1].width) == grid_shape(100, SCALE)
    assert grid_shape(100, SCALE) == (10 * (32 * SCALE + 12 + 2) + 2, 10 * (32 * SCALE + 2) + 2)
    classifier = LinearClassifier.load(cifar100_sweep / "best_model.pt")
    assert list(classifier.class_names) == list(CIFAR100_CLASSES)
    np.testing.assert_array_equal(_decode(events[-1]), _hwc(template_grid(classifier.weight, CIFAR100_CLASSES, SCALE)))


def test_explicit_logger_gets_no_hp_metric_session(cifar100_sweep):
    main = _accumulator(cifar100_sweep)
    assert "hp_metric" not in main.Tags()["scalars"]
    with pytest.raises(KeyError):
        main.PluginTagToContent(metadata.PLUGIN_NAME)
    body = {"allowedStatuses": ALL_STATUSES, "sliceSize": 10}
    groups = _post(_hparams_client(cifar100_sweep)["/session_groups"], body)
    assert sorted(g["name"] for g in groups["sessionGroups"]) == ["0.1, 0.001", "0.2, 0.001"]  # Trial IDs
    assert all(g["hparams"]["dataset"] == "cifar100" for g in groups["sessionGroups"])


def test_logger_false_writes_no_tensorboard_files(cifar10_dir, tmp_path, capsys):
    _fit(cifar10_dir, tmp_path, "--trainer.logger", "false", lrs=[0.1, 0.2], regs=[1e-3])
    assert "best validation accuracy" in capsys.readouterr().out
    assert (tmp_path / "sweep.json").is_file() and (tmp_path / "best_model.pt").is_file()
    assert not list(tmp_path.rglob("events.out.tfevents.*"))
    assert not [p for p in tmp_path.rglob("*") if p.is_dir() and p.name.startswith("lr=")]


class _Crash(pl.Callback):
    def on_train_batch_end(self, trainer, *args) -> None:
        # The first batch's end (it may hold several SGD steps), before the first validation.
        if trainer.global_step >= 5:
            raise RuntimeError("boom")


def test_crashed_fit_ends_its_sessions_as_failures(cifar10_dir, tmp_path):
    """In-process: a fit that dies before its first validation leaves no session 'running'."""
    data = CIFARDataModule(data_dir=str(cifar10_dir), download=False, batch_size=BATCH)
    model = LinearClassifierModule(lr=[0.1, 0.2], reg=[1e-3], class_names=CIFAR10_NAMES)
    trainer = pl.Trainer(
        max_steps=STEPS,
        val_check_interval=INTERVAL,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(tmp_path), default_hp_metric=False),
        callbacks=[SweepTensorBoard(), _Crash()],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(model, data)
    log_dir = tmp_path / "lightning_logs" / "version_0"
    for lr, reg in model.configs:
        content = _accumulator(log_dir / config_name(lr, reg)).PluginTagToContent(metadata.PLUGIN_NAME)
        assert metadata.SESSION_START_INFO_TAG in content
        end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        assert end.status == api_pb2.STATUS_FAILURE


@pytest.mark.parametrize("scale", [0, 2.5])
def test_template_scale_must_be_a_whole_positive_number(scale):
    with pytest.raises(ConfigError, match="template_scale"):
        SweepTensorBoard(template_scale=scale)
