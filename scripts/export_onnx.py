#!/usr/bin/env python
"""Export a saved model to ONNX: ``stn-gluon export-onnx`` as a script."""
import sys

from stn_gluon.cli import main

if __name__ == "__main__":
    sys.exit(main(["export-onnx"] + sys.argv[1:]))
