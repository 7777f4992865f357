"""Normalization layers that are drop-in for torch.nn (same names, arguments, state_dict keys)."""

from normlab.nn.registry import create_norm

__all__ = ["create_norm"]
