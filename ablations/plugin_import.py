"""Users' plugins named by an import string, "package.module:name": recognise one, import it,
check its signature. Torch-free: the dataset floor imports it (ablations/plugins.py says what
each plugin key takes)."""

from __future__ import annotations

import importlib
import inspect


def is_import_string(value: object) -> bool:
    """value -> True for a "module:name" string (a plugin), False for a built-in choice."""
    return isinstance(value, str) and ":" in value


def import_object(text: str, *, key: str | None):
    """"package.module:name" -> the object; ValueError naming the key (None: not a grid key) and the import string."""
    where = f"key {key!r}: " if key else ""
    hint = (" (`tripletlab run` imports it from its current directory or the installed packages; "
            "on a Dask cluster it must be importable on every worker: installed there or on the "
            "workers' PYTHONPATH)") if key else ""
    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{where}import string {text!r} must look like 'package.module:name'")
    try:
        obj = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's to see
        raise ValueError(f"{where}cannot import module {module_name!r} of {text!r}: "
                         f"{type(err).__name__}: {err}{hint}") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{where}{text!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{where}{text!r} is a {type(obj).__name__}, not a callable")
    return obj


def checked_signature(fn, *, key: str, text: str, positional: int) -> inspect.Signature:
    """fn must accept `positional` positional arguments."""
    try:
        sig = inspect.signature(fn)
        sig.bind_partial(*range(positional))
    except TypeError as err:
        raise ValueError(f"key {key!r}: {text!r} must accept {positional} positional argument(s), "
                         f"its signature is {signature_text(fn)}: {err}") from err
    except ValueError:  # no signature (a builtin): trust it
        return None
    return sig


def signature_text(fn) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(unknown)"
