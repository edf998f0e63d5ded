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
from dataclasses import dataclass

import torch
from torch import nn

from ablations.data import load_plugin_xy
from ablations.plugin_import import checked_signature, import_object, is_import_string
from losses import TripletStats

PLUGIN_KEYS = ("loss", "encoder", "dataset")
PROBE_FEATURES, PROBE_DIM = 5, 4  # the encoder probe: factory(5, 4) must map (2, 5) to (2, 4)


@dataclass(frozen=True)
class LossPlugin:
    """A checked user loss: the function, the keywords it takes and its component names."""

    fn: object
    keywords: tuple[str, ...]  # of ("margin", "metric")
    components: tuple[str, ...]  # ("loss",) for a scalar; the dict's keys otherwise


def check_plugin(key: str, value: str) -> None:
    """Validate one plugin import string for `key` (cached); ValueError naming both."""
    {"loss": loss_plugin, "encoder": _checked_encoder, "dataset": load_plugin_xy}[key](value)


@functools.lru_cache(maxsize=None)
def loss_plugin(text: str) -> LossPlugin:
    """"module:fn" -> LossPlugin, after one call on a probe batch (8 x 4, 4 classes, margin 0.2)."""
    fn = import_object(text, key="loss")
    sig = checked_signature(fn, key="loss", text=text, positional=2)
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
    checked_signature(factory, key="encoder", text=text, positional=2)
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


__all__ = ["PLUGIN_KEYS", "LossPlugin", "build_plugin_encoder", "check_plugin", "import_object",
           "is_import_string", "load_plugin_xy", "loss_components", "loss_plugin"]
