"""Byte units: sizes are integer bytes everywhere and become GiB/MiB only when formatted or read from a flag."""

from __future__ import annotations

GIB = 1 << 30   # GiB, 2**30 bytes: the unit of --vram/--ram and of every printed size
MIB = 1 << 20   # MiB, 2**20 bytes: -amb and compute-buffer constants
