"""A non-editable install (``pip install .``) carries the configs and the demo codec and
runs the entry points from outside the checkout."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_non_editable_install_runs_the_entry_points(tmp_path):
  target = tmp_path / "site"
  # --no-deps: the dependencies are this environment's; what is checked is the package.
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                  "--no-build-isolation", "--target", str(target), ROOT],
                 check=True, capture_output=True, timeout=300)
  env = dict(os.environ, PYTHONPATH=str(target))
  run = lambda *args: subprocess.run([sys.executable, *args], cwd=tmp_path, env=env,
                                     capture_output=True, text=True, timeout=300)
  where = run("-c", "import neurocodec_jax, os; from neurocodec_jax.configs import neurocodec; "
                    "print(neurocodec_jax.__file__); print(neurocodec.DEMO_CODEC_WEIGHTS); "
                    "print(os.path.exists(neurocodec.DEMO_CODEC_WEIGHTS))")
  package, weights, exists = where.stdout.split()
  assert package.startswith(str(target)) and weights.startswith(str(target)), where.stdout
  assert exists == "True"
  for module in ("neurocodec_jax.cli.demo", "neurocodec_jax.cli.evaluate",
                 "neurocodec_jax.cli.train"):
    proc = run("-m", module, "--help")
    out = proc.stdout + proc.stderr
    # absl's --help exits with 1 after printing the usage; argparse's with 0.
    assert proc.returncode in (0, 1) and "Traceback" not in out and "--" in out, (
        module, out[-2000:])
