"""netdiffusion: synthetic network traffic with diffusion models."""
__version__ = "0.1.0"
