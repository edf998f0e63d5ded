"""Users' own pieces in a grid: `loss`, `encoder` and `dataset` given as "package.module:name".

    loss    = "mypkg.losses:my_loss"        # fn(embeddings (B, E), labels (B,), *, margin?, metric?)
    encoder = "mypkg.models:make_encoder"   # factory(in_features, embedding_dim) -> nn.Module (B, F) -> (B, E)
    dataset = "mypkg.data:load"             # loader() -> (X (N, D) float, y (N,) int)

A loss returns a scalar tensor, a (scalar, losses.TripletStats) pair, or a dict of named
scalar components (trained through the run's weighting method); `margin` and `metric`
are passed by keyword when its signature has them. Each import string is checked
when the grid is loaded (`check_plugin`, from ablations.config.check_value): the
module is imported, the object called once on a small probe (a P x K batch, a
(2, 5) input, the loader itself) and what it returns checked; any problem is a
ValueError naming the key and the import string, before any run starts. Results
are cached per process. The import string is the key's value, so the run id covers
it. Workers import the module themselves: local worker processes with the sys.path
of the process that starts them (`tripletlab run` puts its current directory first),
Dask workers from their own environment, where it must be importable (installed
there, or on the workers' PYTHONPATH).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

PLUGIN_KEYS = ("loss", "encoder", "dataset")
PROBE_FEATURES, PROBE_DIM = 5, 4  # the encoder probe: factory(5, 4) must map (2, 5) to (2, 4)


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


@dataclass(frozen=True)
class LossPlugin:
    """A checked user loss: the function, the keywords it takes and its component names."""

    fn: object
    keywords: tuple[str, ...]  # of ("margin", "metric")
    components: tuple[str, ...]  # ("loss",) for a scalar; the dict's keys otherwise


def check_plugin(key: str, value: str) -> None:
    """Validate one plugin import string for `key` (cached); ValueError naming both."""
    {"loss": loss_plugin, "encoder": _checked_encoder, "dataset": load_plugin_xy}[key](value)


def _signature(fn, *, key: str, text: str, positional: int) -> inspect.Signature:
    """fn must accept `positional` positional arguments."""
    try:
        sig = inspect.signature(fn)
        sig.bind_partial(*range(positional))
    except TypeError as err:
        raise ValueError(f"key {key!r}: {text!r} must accept {positional} positional argument(s), "
                         f"its signature is {_sig_text(fn)}: {err}") from err
    except ValueError:  # no signature (a builtin): trust it
        return None
    return sig


def _sig_text(fn) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(unknown)"


@functools.lru_cache(maxsize=None)
def loss_plugin(text: str) -> LossPlugin:
    """"module:fn" -> LossPlugin, after one call on a probe batch (8 x 4, 4 classes, margin 0.2)."""
    fn = import_object(text, key="loss")
    sig = _signature(fn, key="loss", text=text, positional=2)
    params = sig.parameters if sig is not None else {}
    keywords = tuple(k for k in ("margin", "metric") if k in params)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, PROBE_DIM, generator=g, requires_grad=True)
    labels = torch.arange(8) % 4
    kw = {k: v for k, v in (("margin", 0.2), ("metric", "euclidean")) if k in keywords}
    try:
        out = fn(x, labels, **kw)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"key 'loss': {text!r} raised {type(err).__name__} on a probe batch "
                         f"(embeddings (8, {PROBE_DIM}), labels (8,), {kw}): {err}") from err
    components = loss_components(out, text=text)
    return LossPlugin(fn, keywords, tuple(components))


def loss_components(out, *, text: str) -> dict[str, torch.Tensor]:
    """A loss plugin's return value -> {component: 0-dim tensor}; anything else raises naming `text`."""
    from losses import TripletStats

    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], TripletStats):
        out = out[0]
    named = out if isinstance(out, dict) else {"loss": out}
    bad = {k: type(v).__name__ if not isinstance(v, torch.Tensor) else f"shape {tuple(v.shape)}"
           for k, v in named.items() if not isinstance(v, torch.Tensor) or v.numel() != 1}
    if not named or bad or not all(isinstance(k, str) for k in named):
        raise ValueError(f"key 'loss': {text!r} must return a scalar tensor, a (scalar, TripletStats) "
                         f"pair or a non-empty dict of named scalar tensors; got {type(out).__name__}"
                         + (f" with {bad}" if bad else ""))
    return {k: v.reshape(()) for k, v in named.items()}


def _probe(module: nn.Module, in_features: int):
    """module, F -> its output on a (2, F) zero batch, run in eval mode without gradients and the mode
    restored: the module leaves at initialisation (no BatchNorm statistics, no dropout draws)."""
    training = module.training
    try:
        with torch.no_grad():
            return module.eval()(torch.zeros(2, in_features))
    finally:
        module.train(training)


@functools.lru_cache(maxsize=None)
def _checked_encoder(text: str):
    factory = import_object(text, key="encoder")
    _signature(factory, key="encoder", text=text, positional=2)
    build_plugin_encoder(text, PROBE_FEATURES, PROBE_DIM)
    return factory


def build_plugin_encoder(text: str, in_features: int, embedding_dim: int) -> nn.Module:
    """"module:factory", F, E -> factory(F, E), checked to be an nn.Module mapping (2, F) to (2, E).

    A module without `shared_parameters()` (the last shared layer, for gradient-based
    weightings) gets one returning the parameters of its last submodule that has any.
    """
    factory = import_object(text, key="encoder")
    try:
        module = factory(in_features, embedding_dim)
        out = _probe(module, in_features) if isinstance(module, nn.Module) else None
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"key 'encoder': {text!r} raised {type(err).__name__} building or running "
                         f"factory({in_features}, {embedding_dim}) on a (2, {in_features}) input: {err}") from err
    if not isinstance(module, nn.Module):
        raise ValueError(f"key 'encoder': {text!r} must return a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, embedding_dim):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"key 'encoder': {text!r}: factory({in_features}, {embedding_dim}) must map "
                         f"(2, {in_features}) to (2, {embedding_dim}), got {got}")
    if not hasattr(module, "shared_parameters"):
        last = [m for m in module.modules() if list(m.parameters(recurse=False))]
        params = list(last[-1].parameters(recurse=False)) if last else []
        module.shared_parameters = lambda: params
    return module


@functools.lru_cache(maxsize=None)
def load_plugin_xy(text: str) -> tuple[np.ndarray, np.ndarray]:
    """"module:loader" -> (X (N, D) float, y (N,) int) from loader(), checked like an npz file."""
    from ablations.data import check_xy

    loader = import_object(text, key="dataset")
    _signature(loader, key="dataset", text=text, positional=0)
    try:
        out = loader()
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"key 'dataset': {text!r} raised {type(err).__name__}: {err}") from err
    except SystemExit as err:  # a loader written as a script: not the command's exit
        raise ValueError(f"key 'dataset': {text!r} called sys.exit({err.code!r}) instead of "
                         f"returning (X, y)") from None
    if not isinstance(out, tuple) or len(out) != 2:
        raise ValueError(f"key 'dataset': {text!r} must return a pair (X, y), got {type(out).__name__}")
    x, y = (_plain_array(a, text=text, name=name) for a, name in zip(out, "Xy"))
    check_xy(x, y, source=f"key 'dataset': {text!r}")
    return x, y


def _plain_array(value: Any, *, text: str, name: str) -> np.ndarray:
    """A loader's X or y -> numpy array; a torch tensor is detached and copied to the CPU."""
    if hasattr(value, "detach") and hasattr(value, "device"):  # a torch tensor (maybe requires_grad)
        if value.device.type == "meta":
            raise ValueError(f"key 'dataset': {text!r} returned {name} on the meta device "
                             f"(no data); return real arrays or CPU tensors")
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"key 'dataset': {text!r} returned {name} that is not an array "
                         f"({type(value).__name__}: {err})") from err
