"""Entry points: ``train``, ``evaluate``, ``demo``. They alone choose the codec
(``codec_bridge``) and read configs; the library imports neither."""
