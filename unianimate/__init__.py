"""UniAnimate Studio: human image animation with the UniAnimate unified video diffusion model.

Importing this package loads no weights and imports no heavy dependency.
"""
from __future__ import annotations

__version__ = "0.1.0"
