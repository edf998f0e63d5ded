"""One training step under each weighting method, for the per-step cost benchmark.

Same encoder (ablations.model.EmbeddingMLP, the trainer's), same P x K batch, same
objective (CombinedLoss: batch-hard triplet + pair-classifier CE on positive and
negative pairs), same optimizer; only the weighting method differs. A step is
forward, objective, weighting, backward of the weighted total, optimizer step.
"""

from dataclasses import dataclass, field

import torch

from benchmarks.workloads import K, MARGIN

IN_FEATURES = 64           # the digits features
HIDDEN_LAYERS = 2
WIDTH = 256
EMBEDDING_DIM = 64
BATCH = 256                # 32 classes x K = 8
COMPONENTS = ("triplet", "ce_pos", "ce_neg")
METHOD_PARAMS = {"fixed": {"weights": {name: 1.0 for name in COMPONENTS}}}  # the others: paper defaults


@dataclass
class StepCounter:
    """Backward passes that reached the embedding tensor, per step."""

    passes: list = field(default_factory=list)

    def hook(self, grad):
        self.passes[-1] += 1
        return grad


def make_step(method: str, *, seed: int = 0):
    """method name -> (step() -> float total, StepCounter); each call is one optimizer step."""
    from ablations.model import EmbeddingMLP
    from losses import CombinedLoss
    from losses.weighting import make_weighting

    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(BATCH, IN_FEATURES, generator=gen)
    labels = torch.arange(BATCH // K).repeat_interleave(K)
    torch.manual_seed(seed)
    encoder = EmbeddingMLP(IN_FEATURES, hidden_layers=HIDDEN_LAYERS, width=WIDTH,
                           embedding_dim=EMBEDDING_DIM, normalize=False)
    objective = CombinedLoss(embedding_dim=EMBEDDING_DIM, metric="euclidean", variant="batch_hard",
                             variant_params={"reduction": "mean"}, pairs="hardest")
    weighting = make_weighting(method, components=COMPONENTS, **METHOD_PARAMS.get(method, {}))
    params = [*encoder.parameters(), *objective.parameters(),
              *(p for p in weighting.parameters() if p.requires_grad)]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    counter = StepCounter()
    state = {"step": 0}

    def step() -> float:
        counter.passes.append(0)
        optimizer.zero_grad(set_to_none=True)
        embeddings = encoder(features)  # (B, E)
        embeddings.register_hook(counter.hook)
        out = objective(embeddings, labels, margin=MARGIN)
        weighted = weighting(out.components, step=state["step"], shared=encoder.shared_parameters())
        weighted.total.backward()
        optimizer.step()
        state["step"] += 1
        return weighted.total.item()

    return step, counter
