#!/usr/bin/env python
"""Train STNNet (or the baseline) on MNIST with Gluon: ``stn-gluon train`` as a script."""
import sys

from stn_gluon.cli import main

if __name__ == "__main__":
    sys.exit(main(["train"] + sys.argv[1:]))
