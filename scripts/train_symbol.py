#!/usr/bin/env python
"""Train the symbolic STN classifier with the Module API: ``stn-gluon train-symbol`` as a script."""
import sys

from stn_gluon.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-symbol"] + sys.argv[1:]))
