#!/usr/bin/env python
"""Test accuracy of a saved model: ``stn-gluon evaluate`` as a script."""
import sys

from stn_gluon.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate"] + sys.argv[1:]))
