"""MODEL argument -> TensorMap: a GGUF path (or first shard), a URL, a config.json, or a built-in name."""

from __future__ import annotations

from pathlib import Path

from planner.errors import UnknownModelError
from planner.tensors import TensorMap, builtin, builtin_names, from_config_file

DEFAULT_MODEL = "qwen3-235b-a22b"


def load_model(spec: str | None, *, check_size: bool = True) -> TensorMap:
    """Resolve what the user typed as MODEL.

    Raises:
        UnknownModelError: neither a readable file nor a built-in name.
        GGUFFormatError / FileSizeMismatchError / RemoteReadError: from the GGUF reader.
    """
    spec = spec or DEFAULT_MODEL
    if spec.startswith("hf://") and spec[len("hf://"):].strip("/").count("/") == 1:
        # hf://owner/repo[@revision] without a file: config.json + safetensors headers (planner.safetensors)
        from planner.safetensors import read_repo

        return read_repo(spec)
    if spec.startswith(("http://", "https://", "hf://")):
        from planner.gguf_header import read_gguf
        from planner.tensors import from_gguf

        return from_gguf(read_gguf(spec, check_size=check_size))
    path = Path(spec).expanduser()
    if path.is_file():
        if path.name.endswith(".json"):
            return from_config_file(path)
        from planner.gguf_header import read_gguf
        from planner.tensors import from_gguf

        return from_gguf(read_gguf(path, check_size=check_size))
    if path.is_dir() and (path / "config.json").is_file():
        return from_config_file(path / "config.json")
    if spec.lower() in builtin_names():
        return builtin(spec)
    if path.suffix in (".gguf", ".json") or "/" in spec:
        raise UnknownModelError(f"{spec}: no such file")
    raise UnknownModelError(f"unknown model {spec!r}",
                            hint=f"give a .gguf path, a config.json, or a built-in: {', '.join(builtin_names())}")
