"""The emulated accelerator: the real runtime with the pipeline call and the model load replaced by
the time a real card takes (cost.py, figures from imagefleet's emulation.yaml). Never imports torch."""
