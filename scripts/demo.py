"""``make demo``: train STNNet into runs/demo, never destroying an earlier demo.

Run twice, it does not train over the first run (see :func:`stn_gluon.train.runs.plan_demo`):

* the same recipe, finished: says so and exits 0, leaving it as it is;
* the same recipe, interrupted: continues it (``--resume``);
* another recipe (e.g. ``DEMO_ARGS="--epochs 5"``): trains into the first free
  numbered folder, runs/demo-2, runs/demo-3, ...

Usage: python scripts/demo.py [stn-gluon train flags]. With ``--save-dir``,
``--resume`` or ``--overwrite`` the flags go to ``stn-gluon train`` unchanged.
"""
import sys

from stn_gluon.cli import build_parser, main, train_config_from_args
from stn_gluon._runtime.errors import StnGluonError
from stn_gluon.train.runs import plan_demo

DEMO_DIR = "runs/demo"


def run(argv):
    args = build_parser().parse_args(["train", *argv])
    if args.save_dir or args.resume or args.overwrite:
        return main(["train", *argv])
    try:
        plan = plan_demo(train_config_from_args(args).validate(), DEMO_DIR)
    except StnGluonError as err:
        print(f"error: {err.for_cli()}", file=sys.stderr)
        return 2
    print(plan.message, flush=True)
    if plan.done:
        return 0
    return main(["train", *argv, "--save-dir", plan.save_dir] + (["--resume"] if plan.resume else []))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
