"""NeuroCodec-JAX: EEG-guided target speaker extraction in DAC latent space.

Install with ``make venv`` (scripts/bootstrap.sh), not ``pip install .`` alone:
descript-audio-codec and descript-audiotools must go in with ``--no-deps``
(their protobuf<3.20 pin conflicts with grain; requirements/nodeps.txt), and
mamba-ssm, used only as the test reference, must be built without CUDA
(requirements/mamba.txt). Everything else is declared here, from requirements/.
"""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent


def _requirements(name):
  lines = (HERE / "requirements" / name).read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


setuptools.setup(
    name="neurocodec-jax",
    version="0.1.0",
    description="EEG-guided generative target speaker extraction with a frozen DAC, in JAX",
    packages=setuptools.find_packages(include=["neurocodec_jax*", "codec_bridge*",
                                               "codec_training*"]),
    # The demo codec ships inside the bridge package (neurocodec_jax.configs finds it).
    package_data={"codec_bridge": ["weights/*.pth", "weights/manifest.json",
                                   "weights/*/*.pth", "weights/*/manifest.json"]},
    entry_points={"console_scripts": [
        "neurocodec-train = neurocodec_jax.cli.train:run",
        "neurocodec-evaluate = neurocodec_jax.cli.evaluate:run",
        "neurocodec-demo = neurocodec_jax.cli.demo:main",
    ]},
    python_requires=">=3.10",
    install_requires=_requirements("torch.txt") + _requirements("base.txt"),
    extras_require={
        "test": _requirements("test.txt"),
        # Installed --no-deps by scripts/bootstrap.sh; listed for completeness.
        "codec": _requirements("nodeps.txt"),
        "reference": _requirements("mamba.txt"),
    },
)
