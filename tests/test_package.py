"""What `import stn_gluon` does (nothing heavy, no environment change) and the old module paths."""
import importlib
import json
import subprocess
import sys
import warnings

import pytest

from stn_gluon._runtime.moved import MOVED


def _fresh_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_loads_nothing_heavy_and_changes_no_environment():
    seen = _fresh_python(
        "import os, sys, json; before = dict(os.environ); import stn_gluon; "
        "print(json.dumps(dict(heavy=sorted(m for m in ('mxnet', 'onnx', 'onnxruntime', 'starlette', 'uvicorn', "
        "'gluoncv', 'matplotlib') if m in sys.modules), changed=sorted(k for k in set(before) | set(os.environ) "
        "if before.get(k) != os.environ.get(k)))))")
    assert seen == {"heavy": [], "changed": []}


def test_public_names_load_on_first_use():
    seen = _fresh_python(
        "import sys, json, stn_gluon; had = 'mxnet' in sys.modules; block = stn_gluon.SpatialTransformer; "
        "print(json.dumps(dict(had=had, has='mxnet' in sys.modules, name=block.__module__, "
        "listed='get_model' in dir(stn_gluon))))")
    assert seen == {"had": False, "has": True, "name": "stn_gluon.nn.blocks", "listed": True}


def test_an_unknown_attribute_is_an_attribute_error():
    import stn_gluon

    with pytest.raises(AttributeError, match="no_such_name"):
        stn_gluon.no_such_name  # noqa: B018


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_every_old_module_path_imports_the_new_module(old, new):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.modules.pop(old, None)
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)


def test_the_readmes_old_imports_still_work():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from stn_gluon.data import to_ndarray  # a module then, a package now
        from stn_gluon.export import load_model
        from stn_gluon.onnx import OnnxModel, export_onnx, quantize_onnx
        from stn_gluon.symbol.train import fit_module
        from stn_gluon.training import TrainConfig, fit
    from stn_gluon.export.onnx import OnnxModel as new_onnx_model
    from stn_gluon.train.gluon import fit as new_fit

    assert OnnxModel is new_onnx_model and fit is new_fit
    assert all(callable(f) for f in (to_ndarray, load_model, export_onnx, quantize_onnx, fit_module, TrainConfig))


def test_the_finder_answers_only_its_own_names():
    from stn_gluon._runtime.moved import _FINDER

    assert _FINDER.find_spec("stn_gluon.nn.ops") is None
    assert _FINDER.find_spec("json") is None
    assert _FINDER.find_spec("stn_gluon.training") is not None
    assert sum(f is _FINDER for f in sys.meta_path) == 1


@pytest.mark.parametrize("package, module", [("stn_gluon.data", "stn_gluon.data.mnist"),
                                             ("stn_gluon.export", "stn_gluon.export.saved")])
def test_a_package_that_was_a_module_offers_all_its_names(package, module):
    pkg, mod = importlib.import_module(package), importlib.import_module(module)
    assert sorted(pkg.__all__) == sorted(mod.__all__)
    assert all(getattr(pkg, name) is getattr(mod, name) for name in mod.__all__)


def test_onnx_runtime_inference_imports_no_mxnet():
    seen = _fresh_python("import sys, json; from stn_gluon.export.onnx_model import OnnxModel; "
                         "from stn_gluon.serve.predictors import load_predictor; "
                         "print(json.dumps(dict(mxnet='mxnet' in sys.modules)))")
    assert seen == {"mxnet": False}
