"""Flax models: the NeuroCodec generator, its EEG encoder and Mamba, DAC's discriminators."""
