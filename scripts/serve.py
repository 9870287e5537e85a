#!/usr/bin/env python
"""Serve a saved model over HTTP: ``stn-gluon serve`` as a script."""
import sys

from stn_gluon.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve"] + sys.argv[1:]))
