"""The official 2-GPU semantics, run as real processes (torchrun, gloo, CPU) for tests/test_groups.py.

Each process takes its shard x[rank::world] of one global batch (the sampler's sharding), wraps the model in DDP
(gradients averaged, rank 0's buffers broadcast), keeps DAFF's BatchNorms local (split into `groups` per-GPU groups
inside the process) and synchronises SOPE's BatchNorm over the processes with an all_reduce-based SyncBatchNorm
(torch's SyncBatchNorm needs CUDA). One AdamW step; rank 0 saves the loss, the gradients and the updated state.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/groups_worker.py OUT.pt GROUPS
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

from dhvtlib.groups import set_bn_splits
from dhvtlib.models import SOPE

sys.path.insert(0, os.path.dirname(__file__))
from test_groups import one_step_setup  # noqa: E402


class AllReduceSyncBatchNorm2d(nn.BatchNorm2d):
    """SyncBatchNorm semantics on any backend: statistics over every process's batch (differentiable all_reduce),
    running variance unbiased over the global count."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        C = x.shape[1]
        count = x.numel() // C * dist.get_world_size()
        sums = dist_nn.all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))]))
        mean = sums[:C] / count
        var = sums[C:] / count - mean * mean
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * count / (count - 1))
            self.num_batches_tracked.add_(1)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return (x - mean[:, None, None]) * scale[:, None, None] + self.bias[:, None, None]


def sync_sope(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, SOPE):
            for parent in module.proj:
                if not isinstance(parent, nn.Sequential):
                    continue  # GELU
                bn = parent[1]
                sync = AllReduceSyncBatchNorm2d(bn.num_features, dtype=bn.weight.dtype)
                sync.load_state_dict(bn.state_dict())
                parent[1] = sync


def main() -> None:
    out, groups = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, x, y, make_opt = one_step_setup()
    sync_sope(model)
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
