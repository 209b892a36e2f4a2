"""Codec training: the project's own small DACs, trained with DAC's objectives
(``python -m codec_training.train``) and shipped with a measured manifest
(``python -m codec_training.ship``). Uses the torch bridge and the library; nothing
imports it."""
