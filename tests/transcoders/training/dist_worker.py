"""Worker for the data-parallel test: one rank of a gloo training run from an activation cache
(spawned by torch.multiprocessing; not a test module)."""

import os


def run_rank(rank: int, world_size: int, port: int, cfg_kwargs: dict) -> None:
    import torch

    from circuit_trace.transcoders.training import TrainConfig, train

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    torch.set_num_threads(1)
    train(None, None, None, TrainConfig(**cfg_kwargs), progress=False)
