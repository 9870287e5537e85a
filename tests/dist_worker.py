"""A worker of the distributed-training tests (tests/test_distributed.py), run by the launcher.

``python dist_worker.py gluon|module CONFIG_JSON DUMP_DIR``: trains the run of
CONFIG_JSON (TrainConfig fields) on a small subset of the embedded real MNIST
sample with :func:`stn_gluon.train.gluon.fit` or :func:`stn_gluon.symbol.fit_module`,
and writes the arrays each worker compared at the end (its trained weights) to
``DUMP_DIR/worker<rank>.npz`` (outside the run's save dir), and the paths
under the save dir it opened for writing, renamed, made or removed (Python's
audit hooks) to ``DUMP_DIR/writes<rank>.json``. With
``STN_TEST_KILL_AT=<rank>:<epoch>:<step>`` that worker kills itself with
SIGKILL at that step (0-based epoch and step): a worker dying mid-epoch.
"""
import json
import os
import signal
import sys
import time

import numpy as np

import stn_gluon.train.gluon as training
from stn_gluon.data.mnist import DigitDataset, load_embedded_sample
from stn_gluon.train.distributed import WorkerGroup, exit_if_distributed
from stn_gluon.train.recipes import TrainConfig

TRAIN, TEST = 384, 100  # images of the embedded sample used: a few steps per epoch


def subset():
    """The first TRAIN training and TEST test digits of the embedded sample (real MNIST)."""
    full = load_embedded_sample()
    return DigitDataset(full.train_images[:TRAIN], full.train_labels[:TRAIN], full.test_images[:TEST],
                        full.test_labels[:TEST], "embedded sample subset")


WRITING_EVENTS = ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree",
                  "shutil.copyfile", "shutil.move")


def watch_writes(save_dir):
    """The list that an audit hook fills with every write-like event under ``save_dir``."""
    root = os.path.realpath(save_dir)
    seen = []

    def inside(path):
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return isinstance(path, str) and os.path.realpath(path).startswith(root)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (any(c in mode for c in "wax+") if isinstance(mode, str)
                       else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
            if writing and inside(path):
                seen.append(f"open {path}")
        elif event in WRITING_EVENTS and any(inside(a) for a in args[:2]):
            seen.append(f"{event} {args[0]}")

    sys.addaudithook(hook)
    return seen


def main():
    trainer_name, config, dump = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    compare = WorkerGroup.compare_weights
    writes = watch_writes(config["save_dir"])
    rank = {}

    def dump_then_compare(group, arrays, **kwargs):
        rank["rank"] = group.rank
        np.savez(os.path.join(dump, f"worker{group.rank}.npz"), **{k: v.asnumpy() for k, v in arrays.items()})
        return compare(group, arrays, **kwargs)

    WorkerGroup.compare_weights = dump_then_compare
    kill = os.environ.get("STN_TEST_KILL_AT")
    if kill:
        victim, epoch, step = map(int, kill.split(":"))
        step_fn, calls = training.train_step, {"n": 0}

        def dying_step(net, trainer, *args):
            if training_rank["rank"] == victim and training_rank["epoch"] == epoch and calls["n"] == step:
                with open(os.path.join(dump, "killed_at"), "w") as f:
                    f.write(repr(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)
            calls["n"] += 1
            return step_fn(net, trainer, *args)

        training_rank = {"rank": None, "epoch": None}
        set_epoch = training.PreparedData.set_epoch

        def noting_epoch(self, e, seed):
            training_rank.update(rank=self.rank, epoch=e)
            calls["n"] = 0
            return set_epoch(self, e, seed)

        training.PreparedData.set_epoch = noting_epoch
        training.train_step = dying_step
    cfg = TrainConfig(**config)
    try:
        if trainer_name == "gluon":
            training.fit(cfg, dataset=subset(), echo=lambda line: print(line, flush=True))
        else:
            from stn_gluon.train.module import fit_module

            fit_module(cfg, dataset=subset(), echo=lambda line: print(line, flush=True))
        with open(os.path.join(dump, f"writes{rank['rank']}.json"), "w") as f:
            json.dump(writes, f)
    except Exception as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        exit_if_distributed(2)
        raise


if __name__ == "__main__":
    sys.exit(main())
