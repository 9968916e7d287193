"""lora-audit: forensics and governance auditing of LoRA adapters for diffusion models."""

__version__ = "0.1.0"

__all__ = ["__version__"]
