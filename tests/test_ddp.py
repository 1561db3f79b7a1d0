"""DistributedDataParallel on CPU (gloo, two processes): each rank runs half the batch, DDP
averages the gradients, and they equal one process's on the whole batch — for a module on the
compiled executor, one with checkpointing and a reversible one."""
from __future__ import annotations

import subprocess
import sys
import zlib

import pytest

SCRIPT = r"""
import os, sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP
import revrnn

NAME, KW, OUT, PORT = sys.argv[1], eval(sys.argv[2]), sys.argv[3], sys.argv[4]


def model():
    torch.manual_seed(0)
    return getattr(revrnn.nn, NAME)(5, 8, num_layers=2, **KW).double()


def data():
    torch.manual_seed(1)
    return torch.randn(7, 4, 5, dtype=torch.float64)


def loss(m, x):
    out, _ = m(x)
    return out.pow(2).mean()


def worker(rank):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=PORT)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    m = model()
    ddp = DDP(m)  # alive through backward: its reducer's hooks go with it
    loss(ddp, data()[:, 2 * rank:2 * rank + 2]).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in m.named_parameters()}, OUT)
    dist.barrier()
    # Out without the interpreter's teardown: under pytest a worker sometimes aborted there
    # ("terminate called without an active exception", gloo's threads), after its work was done.
    os._exit(0)


if __name__ == "__main__":
    mp.spawn(worker, nprocs=2)
    m = model()
    loss(m, data()).backward()
    ddp = torch.load(OUT)
    print(max(((p.grad - ddp[n]).abs().max() / p.grad.abs().max()).item() for n, p in m.named_parameters()))
"""


@pytest.mark.parametrize("name, kw", [("GRU", {}), ("LSTM", dict(memory="recompute", checkpoint_every=3)),
                                      ("RevGRU", {})], ids=["gru", "lstm-recompute", "revgru"])
def test_ddp_averages_to_the_whole_batch(name, kw, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    port = str(29500 + zlib.crc32(f"{name}{tmp_path}".encode()) % 1000)
    done = subprocess.run([sys.executable, str(script), name, repr(kw), str(tmp_path / "grads.pt"), port],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-12
