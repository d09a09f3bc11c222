"""CIFARDataModule (files, download, split, mean) and the TrainBatches / EvalBatches contracts."""

from __future__ import annotations

import functools
import hashlib
import http.server
import itertools
import pickle
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision.datasets.utils as tv_utils
from conftest import CIFAR10_NAMES, cli_args, run_main, write_cifar10
from lightning.fabric.utilities.apply_func import move_data_to_device
from torchvision.datasets import CIFAR10

import lit_linear.data.cifar as cifar
from lit_linear.data.cifar import CIFAR100_CLASSES, PIXELS, load_split
from lit_linear.data.cifar_module import CIFARDataModule
from lit_linear.data.streams import Batch, EvalBatches, TrainBatches, TrainBlock
from lit_linear.errors import ConfigError, DataError
from lit_linear.features.preprocess import preprocess


def fit_dm(data_dir: Path, **kwargs) -> CIFARDataModule:
    kwargs.setdefault("download", False)
    dm = CIFARDataModule(data_dir=str(data_dir), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download: {args} {kwargs}")

    for name in ("download_and_extract_archive", "download_url", "_urlretrieve", "_get_redirect_url"):
        monkeypatch.setattr(tv_utils, name, refuse)
    monkeypatch.setattr(cifar, "download", refuse)
    monkeypatch.setattr("lit_linear.data.cifar_module.download", refuse)


# --- the data module: files, split, preprocessing ---------------------------------------------------
def test_fit_setup_split_and_dtypes(cifar10_dir, no_network):
    dm = fit_dm(cifar10_dir)
    x, y = load_split(cifar10_dir / "cifar-10-batches-py", dm.spec, "train")
    # val_ratio 0.2 of 300 = 60 validation images: the LAST rows, in file order.
    assert torch.equal(dm.train_images, x[:240]) and torch.equal(dm.train_labels, y[:240])
    assert torch.equal(dm.val_images, x[240:]) and torch.equal(dm.val_labels, y[240:])
    for t in (dm.train_images, dm.val_images):
        assert t.dtype == torch.uint8 and t.shape[1] == PIXELS  # stays uint8: 4x less memory than float
    assert dm.train_labels.dtype == torch.int64
    assert dm.num_classes == 10 and dm.feature_dim == 3073 and dm.class_names == CIFAR10_NAMES
    assert dm.test_images is None  # fit does not load the test split
    dm.setup("test")
    assert dm.test_images.shape == (60, PIXELS) and dm.test_labels.shape == (60,)


def test_val_ratio_is_deterministic_last_rows(cifar10_dir):
    a, b = fit_dm(cifar10_dir, val_ratio=0.1), fit_dm(cifar10_dir, val_ratio=0.1)
    assert len(a.val_labels) == 30 and len(a.train_labels) == 270
    assert torch.equal(a.val_images, b.val_images) and torch.equal(a.train_labels, b.train_labels)
    x, _ = load_split(cifar10_dir / "cifar-10-batches-py", a.spec, "train")
    assert torch.equal(a.val_images, x[-30:])


def test_pixel_mean_per_channel_of_training_rows_only(tmp_path):
    root = write_cifar10(tmp_path, per_batch=20, num_test=4)
    # data_batch_5 is exactly the validation split at val_ratio 0.2: make it white, so that any
    # leak of validation rows into the mean shows.
    path = root / "cifar-10-batches-py" / "data_batch_5"
    batch = pickle.loads(path.read_bytes())
    batch["data"][:] = 255
    path.write_bytes(pickle.dumps(batch))
    dm = fit_dm(root)
    train = dm.train_images.double().view(80, 3, 1024) / 255
    channel_mean = train.mean(dim=(0, 2))  # (3,)
    assert dm.pixel_mean.shape == (PIXELS,) and dm.pixel_mean.dtype == torch.float32
    assert torch.allclose(dm.pixel_mean.double(), channel_mean.repeat_interleave(1024), atol=1e-6)
    assert torch.all(dm.pixel_mean < 0.6)  # the white validation rows (1.0) did not pull it up
    # Channel-major: each block of 1024 features is one colour.
    assert all(torch.unique(dm.pixel_mean[c * 1024 : (c + 1) * 1024]).numel() == 1 for c in range(3))

    X = preprocess(dm.train_images[:5], dm.pixel_mean)
    assert X.shape == (5, 3073) and torch.all(X[:, -1] == 1)
    assert torch.allclose(X[:, :-1], dm.train_images[:5].float() / 255 - dm.pixel_mean, atol=1e-6)


def test_cifar100_module(cifar100_dir):
    dm = fit_dm(cifar100_dir, dataset="cifar100", batch_size=40)
    assert dm.num_classes == 100 and dm.class_names == list(CIFAR100_CLASSES) and dm.feature_dim == 3073
    assert len(dm.train_labels) == 320 and len(dm.val_labels) == 80
    assert int(dm.train_labels.min()) >= 0 and int(dm.train_labels.max()) < 100


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"batch_size": 0}, "data.batch_size"),
        ({"batch_size": -5}, "data.batch_size"),
        ({"batch_size": 2.5}, "data.batch_size"),
        ({"batch_size": True}, "data.batch_size"),
        ({"val_ratio": 0.0}, "data.val_ratio"),
        ({"val_ratio": 1.0}, "data.val_ratio"),
        ({"val_ratio": 1.5}, "data.val_ratio"),
        ({"val_ratio": -0.2}, "data.val_ratio"),
        ({"val_ratio": float("nan")}, "data.val_ratio"),
        ({"val_ratio": "0.2"}, "data.val_ratio"),
        ({"dataset": "mnist"}, "data.dataset"),
        ({"eval_batch_size": 0}, "data.eval_batch_size"),
    ],
)
def test_config_errors_at_construction(kwargs, option):
    with pytest.raises(ConfigError, match=option):
        CIFARDataModule(**kwargs)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError, match="cifar10, cifar100.*'mnist'"):
        CIFARDataModule(dataset="mnist")


def test_val_ratio_leaving_an_empty_split(tmp_path):
    root = write_cifar10(tmp_path, per_batch=1, num_test=1)  # 5 training images
    with pytest.raises(ConfigError, match="data.val_ratio=0.05 leaves 0 of 5"):
        fit_dm(root, val_ratio=0.05, batch_size=1)


# --- finding, and never needlessly downloading, the files ------------------------------------------
def test_missing_folder_without_download(tmp_path):
    dm = CIFARDataModule(data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "--data.download true" in message and "--data.data_dir" in message
    with pytest.raises(DataError, match="not found"):
        dm.setup("fit")


def test_present_folder_never_downloads(cifar10_dir, no_network):
    """Our tiny files differ from the official checksums, and still load: present copies are used as they are."""
    dm = CIFARDataModule(data_dir=str(cifar10_dir), download=True, batch_size=20)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_labels) == 240
    # Pointing at the batches folder itself works too.
    dm = CIFARDataModule(data_dir=str(cifar10_dir / "cifar-10-batches-py"), download=True)
    dm.prepare_data()


def test_incomplete_folder_is_reported_not_downloaded_over(tmp_path, no_network):
    root = write_cifar10(tmp_path, per_batch=2, num_test=2)
    (root / "cifar-10-batches-py" / "data_batch_4").unlink()
    for download in (True, False):
        dm = CIFARDataModule(data_dir=str(root), download=download)
        with pytest.raises(DataError, match=r"cifar-10-batches-py is incomplete: missing data_batch_4"):
            dm.prepare_data()


def test_meta_with_100_names_in_cifar10_folder(tmp_path):
    root = write_cifar10(tmp_path, per_batch=4, num_test=4)
    meta = root / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": list(CIFAR100_CLASSES)}))
    with pytest.raises(DataError, match="lists 100 class names, but CIFAR-10 has 10") as info:
        fit_dm(root, batch_size=4)
    assert str(meta) in str(info.value)


class _Server:
    """A local HTTP server for one folder, counting the GET requests it answers."""

    def __init__(self, folder: Path) -> None:
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.gets += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # torchvision's redirect probe hangs up mid-body: a broken pipe, not a failure

        self.gets = 0
        self.httpd = Quiet(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def archive_server(tmp_path, monkeypatch):
    """A tiny cifar-10-python.tar.gz on 127.0.0.1, with torchvision's CIFAR10 URL and MD5 pointed at it."""
    source = write_cifar10(tmp_path / "source", per_batch=10, num_test=10)
    served = tmp_path / "served"
    served.mkdir()
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")  # the official layout
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = _Server(served)
    monkeypatch.setattr(CIFAR10, "url", f"{server.url}/cifar-10-python.tar.gz")
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    yield server
    server.close()


def test_download_verifies_and_extracts(tmp_path, archive_server):
    data_dir = tmp_path / "fresh" / "data"  # not there yet
    dm = CIFARDataModule(data_dir=str(data_dir), download=True, batch_size=10)
    dm.prepare_data()
    gets = archive_server.gets
    assert gets >= 1  # torchvision probes for redirects with a GET, then fetches
    assert (data_dir / "cifar-10-python.tar.gz").is_file()
    assert sorted(p.name for p in (data_dir / "cifar-10-batches-py").iterdir()) == sorted(dm.spec.all_files)
    dm.setup("fit")
    assert len(dm.train_labels) == 40 and len(dm.val_labels) == 10 and dm.class_names == CIFAR10_NAMES
    # Present now: a second data module does not download again.
    CIFARDataModule(data_dir=str(data_dir), download=True).prepare_data()
    assert archive_server.gets == gets


def test_download_with_wrong_md5_fails(tmp_path, archive_server, monkeypatch):
    monkeypatch.setattr(CIFAR10, "tgz_md5", "0" * 32)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match=r"downloading CIFAR-10 from http://127\.0\.0\.1.*failed.*MD5 0{32}"):
        CIFARDataModule(data_dir=str(data_dir), download=True).prepare_data()
    assert archive_server.gets >= 1
    assert not (data_dir / "cifar-10-batches-py").exists()  # nothing unverified was unpacked


def test_download_unreachable_server_is_a_data_error(tmp_path, archive_server, monkeypatch):
    monkeypatch.setattr(CIFAR10, "url", f"{archive_server.url}/no-such-file.tar.gz")
    with pytest.raises(DataError, match="no-such-file.tar.gz .*failed"):
        CIFARDataModule(data_dir=str(tmp_path / "data"), download=True).prepare_data()


# --- TrainBatches ---------------------------------------------------------------------------------
N = 103  # not a multiple of the batch size: the tail of each epoch is dropped


@pytest.fixture(scope="module")
def split() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randint(0, 256, (N, PIXELS), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return images, torch.arange(N) % 10


def take(batches: TrainBatches, k: int) -> list[Batch]:
    """The first k steps of one-step blocks, each as the Batch of its rows."""
    blocks = itertools.islice(iter(batches), k)
    return [Batch(block.images[0], block.labels[0], block.index[0]) for block in blocks]


def test_train_batch_shapes_and_contents(split):
    images, labels = split
    block = next(iter(TrainBatches(images, labels, batch_size=10, seed=0)))
    assert isinstance(block, TrainBlock) and block.index.shape == (1, 10)
    batch = take(TrainBatches(images, labels, batch_size=10, seed=0), 1)[0]
    assert batch.images.shape == (10, PIXELS) and batch.images.dtype == torch.uint8
    assert batch.labels.shape == (10,) and batch.labels.dtype == torch.int64
    assert batch.index.shape == (10,) and batch.index.dtype == torch.int64
    assert torch.equal(batch.images, images[batch.index]) and torch.equal(batch.labels, labels[batch.index])


def test_each_epoch_draws_distinct_rows(split):
    tb = TrainBatches(*split, batch_size=10, seed=3)
    assert tb.batches_per_epoch == 10
    epochs = [torch.cat([b.index for b in take_range(tb, e * 10, 10)]) for e in range(3)]
    for rows in epochs:
        assert rows.numel() == 100 and rows.unique().numel() == 100  # without replacement
        assert int(rows.min()) >= 0 and int(rows.max()) < N
    assert not torch.equal(epochs[0], epochs[1])  # a fresh permutation each epoch


def take_range(tb: TrainBatches, first: int, k: int) -> list[Batch]:
    return [tb.batch(step) for step in range(first, first + k)]


def test_order_is_a_function_of_seed_and_step(split):
    a, b, c = (TrainBatches(*split, batch_size=10, seed=s) for s in (7, 7, 8))
    ia, ib, ic = ([x.index for x in take(t, 25)] for t in (a, b, c))
    assert all(torch.equal(x, y) for x, y in zip(ia, ib))
    assert not all(torch.equal(x, y) for x, y in zip(ia, ic))
    # Random access in any order gives the same batches (no hidden state beyond a cache).
    assert torch.equal(a.batch(3).index, ia[3]) and torch.equal(a.batch(22).index, ia[22])
    assert torch.equal(a.batch(3).index, ia[3])


@pytest.mark.parametrize("first_step", [0, 1, 9, 10, 17])
def test_resume_continues_the_uninterrupted_stream(split, first_step):
    whole = take(TrainBatches(*split, batch_size=10, seed=5), 30)
    resumed = take(TrainBatches(*split, batch_size=10, seed=5, first_step=first_step), 30 - first_step)
    assert all(torch.equal(x.index, y.index) for x, y in zip(whole[first_step:], resumed, strict=True))


def test_state_dict_round_trip_and_mismatch(split):
    saved = TrainBatches(*split, batch_size=10, seed=11).state_dict()
    other = TrainBatches(*split, batch_size=10, seed=0, first_step=4)
    other.batch(4)  # caches epoch 0 of seed 0
    other.load_state_dict(saved)
    assert torch.equal(other.batch(4).index, TrainBatches(*split, batch_size=10, seed=11).batch(4).index)
    with pytest.raises(ConfigError, match="data.batch_size"):
        TrainBatches(*split, batch_size=20, seed=11).load_state_dict(saved)


@pytest.mark.parametrize("world_size", [2, 5])
def test_ddp_ranks_split_the_same_global_batch(split, world_size):
    single = TrainBatches(*split, batch_size=10, seed=1)
    ranks = [TrainBatches(*split, batch_size=10, seed=1, rank=r, world_size=world_size) for r in range(world_size)]
    for step in (0, 1, 9, 10, 23):
        shares = [r.batch(step) for r in ranks]
        assert all(s.index.numel() == 10 // world_size for s in shares)
        assert torch.equal(torch.cat([s.index for s in shares]), single.batch(step).index)
        assert torch.equal(torch.cat([s.images for s in shares]), single.batch(step).images)


@pytest.mark.parametrize(
    "kwargs, fault",
    [
        ({"batch_size": 7, "world_size": 2}, r"data.batch_size \(7\) must be divisible by the number of devices \(2\)"),
        ({"batch_size": N + 1}, rf"data.batch_size \({N + 1}\) is larger than the training split \({N} images\)"),
        ({"batch_size": 0}, "data.batch_size must be a positive integer"),
    ],
)
def test_train_batches_config_errors(split, kwargs, fault):
    with pytest.raises(ConfigError, match=fault):
        TrainBatches(*split, seed=0, **kwargs)


def test_whole_split_as_one_batch_and_huge_seed(split):
    tb = TrainBatches(*split, batch_size=N, seed=2**70)  # a seed beyond 64 bits is still a valid seed
    a, b = take(tb, 2)
    assert sorted(a.index.tolist()) == list(range(N)) and not torch.equal(a.index, b.index)


# --- EvalBatches ----------------------------------------------------------------------------------
@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
@pytest.mark.parametrize("chunk", [1, 10, 1000])
def test_eval_shards_cover_the_split_exactly_once(split, world_size, chunk):
    images, labels = split
    seen = []
    for rank in range(world_size):
        shard = EvalBatches(images, labels, chunk, rank, world_size)
        batches = list(shard)
        assert len(batches) == len(shard)
        for b in batches:
            assert b.images.dtype == torch.uint8 and b.labels.dtype == torch.int64 and b.index.dtype == torch.int64
            assert len(b.index) <= chunk
            assert torch.equal(b.images, images[b.index]) and torch.equal(b.labels, labels[b.index])
            seen.extend(b.index.tolist())
    assert seen == list(range(N))  # in row order, every row once


def test_eval_batches_refuses_empty_chunks(split):
    with pytest.raises(ConfigError, match="data.eval_batch_size"):
        EvalBatches(*split, chunk_size=0)


# --- loaders handed to Lightning ------------------------------------------------------------------
def test_loaders_follow_trainer_rank_and_step(cifar10_dir):
    dm = fit_dm(cifar10_dir, batch_size=20, eval_batch_size=50)
    plain = dm.train_dataloader()
    assert isinstance(plain, TrainBatches) and plain.first_step == 0
    trainer = SimpleNamespace(global_rank=1, world_size=2, global_step=7, max_steps=9, loggers=[], fast_dev_run=0)
    dm.trainer = trainer
    dm.steps_per_batch = 5  # what the module chooses when a fit starts
    loader = dm.train_dataloader()
    (shard,) = list(loader)  # steps 7 and 8, up to max_steps
    assert shard.step == 7 and shard.index.shape[0] == 2
    assert torch.equal(shard.index[0], plain.batch(7).index[10:])  # rank 1's half of step 7's global batch
    assert torch.equal(shard.images[1], dm.train_images[shard.index[1]])  # a gather from the split tensor
    trainer.global_step = 8  # an iteration starts where the weights are, whenever Lightning starts one
    (shard,) = list(loader)
    assert shard.step == 8 and torch.equal(shard.index[0], plain.batch(8).index[10:])
    # One loader: a chunk of each split per batch, None once that split is done (Lightning's
    # CombinedLoader yields (batch, batch_idx, dataloader_idx)).
    batches = [batch for batch, _, _ in dm.val_dataloader()]
    chunks = [b["train"].index.tolist() for b in batches]  # rank 1's half of the training split, 50 at a time
    assert chunks == [list(range(120, 170)), list(range(170, 220)), list(range(220, 240))]
    assert batches[0]["val"].index.tolist() == list(range(30, 60)) and [b["val"] for b in batches[1:]] == [None, None]


# --- through the command line ---------------------------------------------------------------------
def _one_error_line(proc) -> str:
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.mark.slow
def test_cli_missing_folder(tmp_path, capfd):
    missing = tmp_path / "no_data"
    line = _one_error_line(run_main(capfd, "fit", *cli_args(missing, tmp_path / "runs")))
    assert str(missing / "cifar-10-batches-py") in line and "--data.download true" in line


@pytest.mark.slow
def test_cli_corrupted_batch(tmp_path, capfd):
    root = write_cifar10(tmp_path / "data")
    path = root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:1000])
    line = _one_error_line(run_main(capfd, "fit", *cli_args(root, tmp_path / "runs")))
    assert str(path) in line and "truncated or corrupted" in line


def test_train_accuracy_is_measured_on_a_fixed_sample_of_training_rows(tmp_path):
    """data.train_eval_size: a fixed sample of the training rows, the same at every call; null: all."""
    from conftest import write_cifar10

    root = write_cifar10(tmp_path, per_batch=60)
    sampled = CIFARDataModule(data_dir=str(root), download=False, train_eval_size=50)
    sampled.setup("fit")
    again = CIFARDataModule(data_dir=str(root), download=False, train_eval_size=50)
    again.setup("fit")
    assert sampled.train_eval_images.shape == (50, 3072)
    assert torch.equal(sampled.train_eval_images, again.train_eval_images)
    # Every sampled row is a training row (never a validation row), each at most once.
    rows = {tuple(r.tolist()) for r in sampled.train_images}
    assert all(tuple(r.tolist()) in rows for r in sampled.train_eval_images)
    assert len({tuple(r.tolist()) for r in sampled.train_eval_images}) == 50
    loader = sampled.val_dataloader()
    assert sum(len(b["train"].labels) for b, _, _ in loader if b["train"] is not None) == 50

    everything = CIFARDataModule(data_dir=str(root), download=False, train_eval_size=None)
    everything.setup("fit")
    assert torch.equal(everything.train_eval_images, everything.train_images)
    with pytest.raises(ConfigError, match="data.train_eval_size"):
        CIFARDataModule(train_eval_size=0)


def test_blocks_of_steps_are_the_same_minibatches_as_rows_of_the_split(split):
    single = TrainBatches(*split, batch_size=10, seed=4)
    blocks = TrainBatches(*split, batch_size=10, seed=4, steps_per_batch=3, first_step=6)
    it = iter(blocks)
    for first in (6, 9):
        block = next(it)
        assert isinstance(block, TrainBlock)
        assert block.source.data_ptr() == split[0].data_ptr(), "the split itself: no rows copied"
        assert block.index.shape == block.labels.shape == (3, 10)
        assert block.images.shape == (3, 10, 3072)  # gathered only when read
        for j in range(3):
            step = single.batch(first + j)
            assert torch.equal(block.images[j], step.images) and torch.equal(block.labels[j], step.labels)
            assert torch.equal(block.index[j], step.index)
    moved = move_data_to_device(block, torch.device("cpu"))  # what Lightning's transfer to a device does
    assert isinstance(moved, TrainBlock) and torch.equal(moved.images, block.images)


@pytest.mark.parametrize("first_step, last_step, sizes", [(0, 12, [5, 5, 2]), (7, 12, [5]), (6, 8, [2]), (12, 12, [])])
def test_the_stream_ends_at_last_step(split, first_step, last_step, sizes):
    """With the trainer's max_steps the stream ends there, cutting its last block; it has no length,
    so that Lightning counts no epochs whose end would start the stream again."""
    blocks = TrainBatches(*split, batch_size=10, seed=4, steps_per_batch=5, first_step=first_step, last_step=last_step)
    got = list(blocks)
    assert [b.index.shape[0] for b in got] == sizes
    assert [b.step for b in got] == list(range(first_step, last_step, 5))
    single = TrainBatches(*split, batch_size=10, seed=4)
    if sizes:
        assert torch.equal(
            torch.cat([b.index for b in got]),
            torch.stack([single.batch(t).index for t in range(first_step, last_step)]),
        )
    with pytest.raises(TypeError):
        len(blocks)


def test_every_iteration_starts_at_the_position_it_is_given(split):
    """Lightning may start a new iteration after a restore (a new epoch): it goes on from the
    weights' step, never from where an earlier iteration began."""
    step = [0]
    blocks = TrainBatches(*split, batch_size=10, seed=4, steps_per_batch=5, last_step=30, position=lambda: step[0])
    assert next(iter(blocks)).step == 0
    step[0] = 15
    assert [b.step for b in blocks] == [15, 20, 25]
