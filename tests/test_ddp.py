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
