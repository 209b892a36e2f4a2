"""The `speech` preset's EEG decoders side by side on one split: the model's own
(``id_cue_true_envelopes`` of a quality-ladder row's evaluation) against the linear
backward and forward decoders (``evaluation.linear_baseline``: fit on train, ridge
chosen on val), paired per trial.

  python scripts/speech_decoders.py --split val --rows speech_backward_val speech_encoding
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from neurocodec_jax import evaluation  # pylint: disable=wrong-import-position
from neurocodec_jax.configs import neurocodec  # pylint: disable=wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--split", default="val")
  p.add_argument("--rows", nargs="+", required=True,
                 help="quality-ladder rows (runs/quality/<row>/eval/<split>_none)")
  args = p.parse_args(argv)
  linear = evaluation.linear_baseline(neurocodec.get_config("speech"), args.split)
  print(f"linear backward {linear['identification']:.3f} ± {linear['identification_se']:.3f}, "
        f"forward {linear['forward']['identification']:.3f}")
  for row in args.rows:
    csv = os.path.join("runs", "quality", row, "eval", f"{args.split}_none", "per_example.csv")
    print(row, evaluation.format_decoder_pairing(evaluation.compare_decoders(csv, linear)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
