"""Training beyond one GPU: two CPU processes (gloo) follow one process's loss trajectory.

The processes are spawned with torch.multiprocessing and meet on a free localhost port,
as torchrun would arrange; they train a tiny U-Net at global batch 16 (8 rows each), and
the parent trains the same model in one process at batch 16 to compare.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_train import TINY, _blobs

from course_lib.distributed import DistInfo, init_distributed, is_main_process, rank_and_world
from course_lib.nn.unet import UNet
from course_lib.schedules import NoiseSchedule
from course_lib.train import TrainConfig, train_diffusion

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this PyTorch build has no torch.distributed gloo backend")

CONFIG = TrainConfig(steps=10, batch_size=16, lr=2e-3, warmup_steps=2, ema_decay=0.9)
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train():
    torch.manual_seed(0)
    return train_diffusion(UNet(TINY), NoiseSchedule.cosine(100), _blobs(64), CONFIG, device="cpu", progress=False)


def _worker(rank: int, port: int, out: str) -> None:
    """One rank: join the group as torchrun would, check the batch rule, train, report (rank 0)."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    info = init_distributed()
    try:
        assert (info.rank, info.world_size, info.is_main) == (rank, WORLD, rank == 0)
        assert rank_and_world() == (rank, WORLD) and is_main_process() == (rank == 0)
        try:
            train_diffusion(UNet(TINY), NoiseSchedule.cosine(100), _blobs(64), TrainConfig(steps=1, batch_size=15),
                            device="cpu", progress=False)
            odd_batch = "no error"
        except ValueError as e:
            odd_batch = str(e)
        res = _train()
        if rank == 0:
            torch.save({"losses": res.losses, "raw": res.raw_model.state_dict(), "ema": res.model.state_dict(),
                        "odd_batch": odd_batch, "unwrapped": type(res.model).__name__}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_follow_the_one_process_trajectory(tmp_path):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    ddp = torch.load(out, weights_only=True)  # the default from torch 2.6 on; said here for older torch
    one = _train()

    assert "divide by the world size 2" in ddp["odd_batch"]
    assert ddp["unwrapped"] == "UNet"  # the result is the module, not the DDP wrapper
    assert len(ddp["losses"]) == len(one.losses) == CONFIG.steps
    for a, b in zip(ddp["losses"], one.losses):
        assert abs(a - b) <= 1e-5 * abs(b), (ddp["losses"], one.losses)
    for name, w in one.raw_model.state_dict().items():
        torch.testing.assert_close(ddp["raw"][name], w, rtol=1e-4, atol=1e-5, msg=name)
    for name, w in one.model.state_dict().items():
        torch.testing.assert_close(ddp["ema"][name], w, rtol=1e-4, atol=1e-5, msg=name)


def test_without_a_process_group_nothing_changes(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
    assert isinstance(info, DistInfo) and rank_and_world() == (0, 1)


def test_the_entry_point_trains_and_saves(tmp_path, monkeypatch):
    """``python -m course_lib.train_ddp`` as one process: a tiny budget, a loadable checkpoint."""
    from course_lib.train import load_checkpoint
    from course_lib.train_ddp import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "ckpt"
    args = ["--dataset", "digits", "--quick", "--steps", "2", "--batch-size", "4", "--out", str(out)]
    assert main(args) == 0
    model, meta = load_checkpoint(out, device="cpu")
    assert meta["world_size"] == 1 and len(meta["losses"]) == 2 and meta["train"]["batch_size"] == 4
    assert main(args) == 2  # an existing checkpoint is not replaced without --overwrite


def test_the_entry_point_refuses_what_would_fail_every_rank_alike(tmp_path, monkeypatch, capsys):
    """Said once, before any data is loaded: the full recipe on a CPU (days of training), CUDA asked for on a
    machine without it, and a global batch that the processes cannot share equally."""
    from course_lib import train_ddp

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("COURSE_QUICK", "0")
    monkeypatch.delenv("COURSE_FULL_ON_CPU", raising=False)
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    out = str(tmp_path / "ckpt")
    assert train_ddp.main(["--dataset", "digits", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "train_ddp: full mode on a CPU" in err and "pass --quick" in err and "Jupyter" not in err, err
    if not torch.cuda.is_available():
        monkeypatch.setenv("COURSE_DEVICE", "cuda")
        assert train_ddp.main(["--dataset", "digits", "--quick", "--out", out]) == 2
        assert "train_ddp: device 'cuda' asked for, but CUDA is not available here" in capsys.readouterr().err
        monkeypatch.setenv("COURSE_DEVICE", "cpu")
    # three processes and a global batch of 32: rank 0 says so, the others stay quiet, nothing trains
    monkeypatch.setattr(train_ddp, "load_images", lambda *a, **k: pytest.fail("loaded data before the check"))
    for rank in (0, 1):
        monkeypatch.setattr(train_ddp, "init_distributed",
                            lambda r=rank, **k: DistInfo(rank=r, world_size=3, device=torch.device("cpu")))
        assert train_ddp.main(["--dataset", "digits", "--quick", "--batch-size", "32", "--out", out]) == 2
        err = capsys.readouterr().err
        assert ("must divide by the 3 processes" in err) == (rank == 0), err


def test_the_entry_point_gives_the_same_model_twice(tmp_path, monkeypatch):
    """The U-Net's initial weights are seeded: the same command twice gives the same losses and weights, which
    is what lets a learner compare a DDP run with a single-process one."""
    from course_lib.train import load_checkpoint
    from course_lib.train_ddp import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    runs = []
    for k in range(2):
        torch.manual_seed(k)  # whatever state the global generator is in
        out = tmp_path / f"run{k}"
        assert main(["--dataset", "digits", "--quick", "--steps", "3", "--batch-size", "4", "--out", str(out)]) == 0
        runs.append(load_checkpoint(out, device="cpu"))
    (a, meta_a), (b, meta_b) = runs
    assert meta_a["losses"] == meta_b["losses"]
    for name, w in a.state_dict().items():
        assert torch.equal(w, b.state_dict()[name]), name


def test_the_readmes_sampling_snippet_runs_on_a_train_ddp_checkpoint(tmp_path, monkeypatch):
    """README's "Beyond one GPU" shows how to sample the checkpoint train_ddp saves: that Python block, run as
    written on a checkpoint of the quick recipe, gives the images it says."""
    import re
    from pathlib import Path

    from course_lib.train_ddp import main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Beyond one GPU", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'load_checkpoint("checkpoints/mine"' in block
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["--dataset", "digits", "--quick", "--steps", "2", "--batch-size", "4",
                 "--out", "checkpoints/mine"]) == 0
    namespace: dict = {}
    exec(compile(block.replace("n=16, seed=0)", "n=16, seed=0, progress=False)"), "README", "exec"), namespace)
    images = namespace["images"]
    assert tuple(images.shape) == (16, 1, 32, 32) and float(images.abs().max()) <= 1.0
