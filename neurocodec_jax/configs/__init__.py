"""NeuroCodec configurations (``neurocodec.py``: the presets; ``validate.py``: every
field's valid values; ``saved.py``: a run's saved config read back). Entry points
read them; the library does not import them."""

import os

# The config file, for ``--config <CONFIG_FILE>:<preset>`` (a path, as ml_collections'
# config flags take; valid in an installed package too).
CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "neurocodec.py")
