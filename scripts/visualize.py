#!/usr/bin/env python
"""Plot what a saved model's STN does: ``stn-gluon visualize`` as a script."""
import sys

from stn_gluon.cli import main

if __name__ == "__main__":
    sys.exit(main(["visualize"] + sys.argv[1:]))
