"""The generative core: native CPU diffusion model and the Stable Diffusion + LoRA + ControlNet path.

``train.train`` fits a model directory from an encoded dataset; ``generate.generate`` samples flows
per class from it into a dataset of the same format. See docs/model.md.
"""
