#!/usr/bin/env python
"""Distorted-MNIST benchmark: ``stn-gluon bench distortions`` as a script (same flags)."""
import sys

from stn_gluon.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "distortions"] + sys.argv[1:]))
