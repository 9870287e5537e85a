"""What MXNet 1.9.1 needs from numpy and Python, put in place before it is imported (stn_gluon._runtime.compat)."""
import subprocess
import sys
import types

import numpy as np

from stn_gluon._runtime.compat import NUMPY_ALIASES, restore_numpy_aliases


def _numpy_version():
    return tuple(int(part) for part in np.__version__.split(".")[:2])


def test_only_missing_aliases_are_restored_and_each_is_the_builtin():
    fake = types.ModuleType("fake_numpy")
    kept = object()
    fake.float = kept  # present: left alone
    assert restore_numpy_aliases(fake) == [name for name in NUMPY_ALIASES if name != "float"]
    assert fake.float is kept
    assert all(getattr(fake, name) is NUMPY_ALIASES[name] for name in NUMPY_ALIASES if name != "float")
    assert restore_numpy_aliases(fake) == []  # a second call changes nothing


def test_the_installed_numpy_has_every_alias_mxnet_uses():
    """numpy < 1.24 (Python 3.10, 3.11) still has them and was not touched; 1.26 (3.12) got them back."""
    if _numpy_version() < (1, 24):
        assert not [name for name in NUMPY_ALIASES if name in vars(np)]  # still numpy's own deprecated ones
    else:
        assert all(vars(np).get(name) is NUMPY_ALIASES[name] for name in NUMPY_ALIASES)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert all(getattr(np, name) is builtin for name, builtin in NUMPY_ALIASES.items())


def test_the_package_imports_mxnet_without_the_distutils_import_hook():
    """MXNet imports distutils.version: Python 3.12 has none, and where setuptools' hook did not run (here: removed
    before anything imports), the package installs setuptools' copy itself. 3.10/3.11 use their own."""
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'distutils' not in type(f).__module__]\n"
            "assert 'distutils' not in sys.modules\n"
            "import stn_gluon, mxnet\n"
            "import distutils.version\n"
            "print(mxnet.__version__, 'setuptools' in distutils.__file__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    version, from_setuptools = out.stdout.split()
    assert version == "1.9.1"
    if sys.version_info >= (3, 12):
        assert from_setuptools == "True"
