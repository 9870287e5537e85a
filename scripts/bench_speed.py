#!/usr/bin/env python
"""Speed benchmark: ``stn-gluon bench speed`` as a script (add ``time-to-accuracy`` for the other one)."""
import sys

from stn_gluon.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(["bench"] + (args if args[:1] in (["speed"], ["time-to-accuracy"]) else ["speed"] + args)))
