"""The official 2-GPU semantics, run as real processes (torchrun, gloo, CPU) for tests/test_groups.py.

Each process takes its shard x[rank::world] of one global batch (the sampler's sharding), wraps the model in DDP
(gradients averaged, rank 0's buffers broadcast), keeps DAFF's BatchNorms local (split into `groups` per-GPU groups
inside the process) and synchronises SOPE's BatchNorm over the processes (AllReduceSyncBatchNorm2d: torch's
SyncBatchNorm needs CUDA). One AdamW step; rank 0 saves the loss, the gradients and the updated state.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/groups_worker.py OUT.pt GROUPS [KIND]

KIND is 'dhvt' (default) or 'resnet' (the CNN baseline: every BatchNorm per GPU, none synchronised).
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from dhvtlib.run.build import set_bn_splits
from dhvtlib.models import convert_sope_sync_batchnorm

sys.path.insert(0, os.path.dirname(__file__))
from test_groups import one_step_setup  # noqa: E402


def main() -> None:
    out, groups = sys.argv[1], int(sys.argv[2])
    kind = sys.argv[3] if len(sys.argv) > 3 else "dhvt"
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, x, y, make_opt = one_step_setup(kind)
    convert_sope_sync_batchnorm(model, native=False)
    set_bn_splits(model, groups)
    net = nn.parallel.DistributedDataParallel(model)
    opt = make_opt(model)
    loss = nn.functional.cross_entropy(net(x[rank::world]), y[rank::world])
    loss.backward()
    opt.step()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    if rank == 0:
        torch.save({"loss": mean_loss / world, "grads": {k: p.grad for k, p in model.named_parameters()},
                    "state": model.state_dict()}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
