"""cgan-ct: synthetic 3-D CT volumes with conditional GANs (Keras 3 / TensorFlow)."""

import pathlib
import re

from setuptools import find_packages, setup

_ROOT = pathlib.Path(__file__).parent
_VERSION = re.search(r'__version__ = "([^"]+)"', (_ROOT / "cgan_ct" / "version.py").read_text()).group(1)

# One console command per job: cgan-ct-<job> = <package>.<module>:run
_JOBS = {
    "info": "pipelines.info",
    "convert": "tfrecords_tools.convert",
    "inspect": "tfrecords_tools.inspect",
    "train": "pipelines.train",
    "export": "pipelines.export",
    "infer": "pipelines.infer",
    "evaluate": "pipelines.evaluate",
    "demo": "pipelines.demo",
    "train-cascade": "pipelines.train_cascade",
    "synthesize": "pipelines.synthesize",
    "synthesis-report": "pipelines.synthesis_report",
    "reader-study": "pipelines.reader_study",
    "reader-study-score": "pipelines.reader_study_score",
}

setup(
    name="cgan-ct",
    version=_VERSION,
    description="Synthetic 3-D CT volumes with conditional GANs, after Mangalagiri et al.",
    long_description=(_ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE", "THIRD_PARTY_LICENSES.md"],
    python_requires=">=3.10",
    packages=find_packages(
        include=["cgan_ct", "cgan_ct.*", "pipelines", "pipelines.*", "tfrecords_tools", "tfrecords_tools.*"]
    ),
    install_requires=[
        # The full wheel, not tensorflow-cpu: see BUILD_NOTES.md ("TensorFlow wheel").
        "tensorflow>=2.16,<3",
        "tensorboard>=2.16",  # no longer pulled in by TensorFlow 2.21; the training job logs to it
        "keras>=3",
        # TF Serving's request protos (PredictionLog): every export writes its warmup request with them. A few
        # hundred kB of generated protos; its own requirement pins TensorFlow to its own minor version or later.
        "tensorflow-serving-api>=2.16,<3",
        "numpy>=1.26",
        "scipy>=1.11",
        "pydicom>=3,<4",
        "pylibjpeg>=2",
        "pylibjpeg-libjpeg>=2",
        "pylibjpeg-openjpeg>=2",
        "SimpleITK>=2.3",
        "scikit-image>=0.22",
        "absl-py>=2",
        "google-crc32c>=1.5",
        "pillow>=10",
        "matplotlib>=3.8",  # the evaluation figures (Figure API on Agg; imported only where a figure is drawn)
    ],
    extras_require={
        # pip install 'cgan-ct[bm3d]': the BM3D baseline (cgan-ct-evaluate --bm3d). Its licence allows
        # non-commercial use only, so it is not installed unless asked for (THIRD_PARTY_LICENSES.md).
        "bm3d": ["bm3d>=4"],
        # pip install -e '.[gpu]': TensorFlow with its CUDA libraries from PyPI.
        "gpu": ["tensorflow[and-cuda]>=2.16,<3"],
        # pip install -e '.[jax]': Keras' JAX backend (cgan-ct-train --backend jax); CPU wheels here. On GPUs
        # install JAX's CUDA build as JAX documents it (pip install -U "jax[cuda12]").
        "jax": ["jax>=0.4.30"],
        # pip install -e '.[beam]': the conversion as an Apache Beam pipeline (cgan-ct-convert --engine beam).
        "beam": ["apache-beam[tfrecord]>=2.60"],
        # pip install -e '.[realism]': the Fréchet Radiomics Distance (cgan_ct.realism.radiomics_frd). The
        # bhklab fork of PyRadiomics, because PyRadiomics' own PyPI release fails to build on Python >= 3.10;
        # it installs as the same `radiomics` module. 3.1.4 is the version verified here.
        "realism": ["pyradiomics-bhklab==3.1.4"],
        "test": [
            "pytest>=8",
            "pytest-xdist>=3",
            "nibabel>=5",
            "psutil>=5",
            "ruff>=0.6",
            "apache-beam[tfrecord]>=2.60",
            "selenium>=4.20",
            "jax>=0.4.30",  # both Keras backends are tested
            "pyradiomics-bhklab==3.1.4",  # the realism extra: tests/test_realism.py computes FRD features
            "bm3d>=4",  # the bm3d extra: the BM3D baseline is tested
        ],
    },
    # The models shipped with the package (pretrained:NAME): SavedModel folders and their model cards.
    package_data={
        "cgan_ct.model": [
            "pretrained_models/*/*.pb",
            "pretrained_models/*/*.json",
            "pretrained_models/*/*.md",
            "pretrained_models/*/*.jpg",
            "pretrained_models/*/variables/*",
            "pretrained_models/*/assets.extra/*",  # TF Serving's warmup request
            # pretrained:synthesis, a cascade: cascade.json beside a SavedModel folder per model
            "pretrained_models/*/*/*.pb",
            "pretrained_models/*/*/*.json",
            "pretrained_models/*/*/variables/*",
            "pretrained_models/*/*/assets.extra/*",
        ]
    },
    entry_points={
        "console_scripts": [f"cgan-ct-{job}={module}:run" for job, module in _JOBS.items()],
    },
)
