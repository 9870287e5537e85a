"""Put a finished training run into the package as a pretrained model (``pretrained:NAME``).

Copies the run's export (``model-symbol.json``, ``model-0000.params``,
``model.json``) and ``metrics.json`` into ``stn_gluon/pretrained/NAME/``, writes
``provenance.json`` (the exact training command and the git commit it ran
from) and records the SHA-256 of every file in ``stn_gluon/pretrained/manifest.json``.
Refuses a run that did not finish, or whose files do not match its ``model.json``.

Usage::

    python scripts/ship_pretrained.py RUN_DIR NAME --summary "one line" \\
        --command "stn-gluon train ..." --commit GIT_SHA [--note "how it was run"]
"""
import argparse
import json
import os
import shutil
import sys

from stn_gluon._runtime.errors import StnGluonError
from stn_gluon.export.saved import resolve_model, verify_checksums
from stn_gluon._runtime.files import sha256_file, write_json
from stn_gluon.nn.pretrained import MANIFEST, ROOT
from stn_gluon.train.reporting import run_script

FILES = ("model-symbol.json", "model-0000.params", "model.json", "metrics.json")


def ship(run, name, summary, command, commit, note=None, root=ROOT):
    """Copy ``run`` into ``root/name`` and update the manifest; returns the manifest entry."""
    prefix, epoch = resolve_model(run)
    if epoch != 0 or os.path.dirname(os.path.abspath(prefix)) != os.path.abspath(run):
        raise StnGluonError(f"{run}: expected a Gluon run folder with model-0000.params")
    with open(os.path.join(run, "model.json")) as f:
        meta = json.load(f)
    verify_checksums(meta, [prefix + "-symbol.json", prefix + "-0000.params"], os.path.join(run, "model.json"))
    if not os.path.isfile(os.path.join(run, "metrics.json")):
        raise StnGluonError(f"{run}: no metrics.json (the run did not finish)")
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    for file in FILES:
        shutil.copyfile(os.path.join(run, file), os.path.join(folder, file))
    write_json(os.path.join(folder, "provenance.json"),
               dict(command=command, commit=commit, **({"note": note} if note else {})))
    manifest_path = os.path.join(root, MANIFEST)
    manifest = {"models": {}}
    if os.path.isfile(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    entry = dict(summary=summary, sha256={file: sha256_file(os.path.join(folder, file))
                                          for file in FILES + ("provenance.json",)})
    manifest["models"][name] = entry
    write_json(manifest_path, manifest)
    return entry


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="the finished run's save dir")
    p.add_argument("name", help="the model's name (pretrained:NAME)")
    p.add_argument("--summary", required=True, help="one line saying what the model is")
    p.add_argument("--command", required=True, help="the exact command that trained it")
    p.add_argument("--commit", required=True, help="the git commit it was trained from")
    p.add_argument("--note", default=None, help="how it was run (machine, threads)")
    args = p.parse_args()
    entry = ship(args.run, args.name, args.summary, args.command, args.commit, args.note)
    size = sum(os.path.getsize(os.path.join(ROOT, args.name, f)) for f in entry["sha256"])
    print(f"Shipped {args.run} as pretrained:{args.name} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
