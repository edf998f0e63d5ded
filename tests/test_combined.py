"""CombinedLoss (triplet + pair classifier) and TripletWithIDLoss (triplet + class CE)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losses import CombinedLoss, TripletWithIDLoss, batch_hard_triplet_loss, naive_triplet_loss, pairwise_distances, semi_hard_triplet_loss

E = 6


def encoder_and_batch(seed: int, *, B: int = 16, D_in: int = 5, classes: int = 4):
    torch.manual_seed(seed)
    encoder = torch.nn.Linear(D_in, E).double()
    x = torch.randn(B, D_in, dtype=torch.float64)
    y = torch.arange(B) % classes
    return encoder, x, y


def grads_of(loss: torch.Tensor, params) -> list[torch.Tensor]:
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params)]


@pytest.mark.parametrize("form", ["triplets", "batch"])
def test_gradients_reach_the_encoder_through_every_component(form):
    encoder, x, y = encoder_and_batch(0)
    loss = CombinedLoss(embedding_dim=E, metric="euclidean").double()
    emb = encoder(x)
    if form == "triplets":
        out = loss.forward_triplets(emb[:5], emb[5:10], emb[10:15], margin=5.0)
    else:
        out = loss(emb, y, margin=5.0)
    assert set(out.components) == {"triplet", "ce_pos", "ce_neg"}
    for name, value in out.components.items():
        assert value.dim() == 0
        grads = grads_of(value, list(encoder.parameters()))
        assert all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    for name in ("ce_pos", "ce_neg"):  # and the CE terms train the classifier
        assert sum(float(g.abs().sum()) for g in grads_of(out.components[name], list(loss.classifier.parameters()))) > 0


def separable_embeddings(n_per_class: int, classes: int, *, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(classes, E, dtype=torch.float64, generator=g)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[y] + 0.1 * torch.randn(len(y), E, dtype=torch.float64, generator=g), y


def random_triplets(emb, y, count: int, *, seed: int):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, len(y), (count,), generator=g)
    same = y[None, :] == y[a][:, None]  # (count, B)
    p = torch.multinomial(same.double(), 1, generator=g)[:, 0]
    n = torch.multinomial((~same).double(), 1, generator=g)[:, 0]
    return emb[a], emb[p], emb[n]


def test_pair_classifier_reaches_near_perfect_accuracy_on_separable_data():
    torch.manual_seed(0)
    emb, y = separable_embeddings(8, 6, seed=1)
    train = random_triplets(emb, y, 200, seed=2)
    loss = CombinedLoss(embedding_dim=E, metric="euclidean").double()
    opt = torch.optim.Adam(loss.classifier.parameters(), lr=0.1)
    for step in range(40):
        out = loss.forward_triplets(*train, margin=0.2)
        opt.zero_grad()
        (out.components["ce_pos"] + out.components["ce_neg"]).backward()
        opt.step()
    held_out, y_held = separable_embeddings(8, 6, seed=1)  # same classes, fresh noise
    held_out = held_out + 0.1 * torch.randn_like(held_out)
    with torch.no_grad():
        test = loss.forward_triplets(*random_triplets(held_out, y_held, 400, seed=3), margin=0.2)
        batch = loss(held_out, y_held, margin=0.2)  # the hardest pairs of the batch form too
    assert test.pair_accuracy.item() >= 0.98
    assert batch.pair_accuracy.item() >= 0.95
    assert test.components["ce_pos"].item() < 0.1 and test.components["ce_neg"].item() < 0.1


def test_batch_form_hardest_pairs_and_triplet_term():
    encoder, x, y = encoder_and_batch(3, B=12, classes=3)
    y[-1] = 7  # a singleton: not an anchor, still a negative
    emb = encoder(x).detach()
    loss = CombinedLoss(embedding_dim=E, metric="squared_euclidean", pairs="hardest").double()
    out = loss(emb, y, margin=0.5)
    torch.testing.assert_close(out.components["triplet"], batch_hard_triplet_loss(emb, y, margin=0.5, metric="squared_euclidean"))
    d = pairwise_distances(emb, metric="squared_euclidean").tolist()
    pos_pairs, neg_pairs = [], []
    for a in range(len(y)):  # loop reference: farthest positive, nearest negative
        positives = [j for j in range(len(y)) if j != a and y[j] == y[a]]
        negatives = [k for k in range(len(y)) if y[k] != y[a]]
        if positives and negatives:
            pos_pairs.append((a, max(positives, key=lambda j: d[a][j])))
            neg_pairs.append((a, min(negatives, key=lambda k: d[a][k])))
    assert len(pos_pairs) == 11
    with torch.no_grad():
        logits_p = loss.classifier(emb[[a for a, _ in pos_pairs]], emb[[p for _, p in pos_pairs]])
        logits_n = loss.classifier(emb[[a for a, _ in neg_pairs]], emb[[n for _, n in neg_pairs]])
    torch.testing.assert_close(out.components["ce_pos"], F.cross_entropy(logits_p, torch.ones(11, dtype=torch.long)))
    torch.testing.assert_close(out.components["ce_neg"], F.cross_entropy(logits_n, torch.zeros(11, dtype=torch.long)))


def test_batch_form_all_pairs_and_other_variant():
    encoder, x, y = encoder_and_batch(4, B=8, classes=2)
    emb = encoder(x).detach()
    params = {"semantics": "tf", "reduction": "mean"}
    loss = CombinedLoss(embedding_dim=E, metric="cosine", pairs="all", variant="semi_hard", variant_params=params).double()
    out = loss(emb, y, margin=0.3)
    torch.testing.assert_close(out.components["triplet"], semi_hard_triplet_loss(emb, y, margin=0.3, metric="cosine", **params))
    a, b = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    same = (y[a] == y[b]) & (a != b)
    with torch.no_grad():
        expected_pos = F.cross_entropy(loss.classifier(emb[a[same]], emb[b[same]]), torch.ones(int(same.sum()), dtype=torch.long))
    torch.testing.assert_close(out.components["ce_pos"], expected_pos)
    assert out.stats is not None and out.stats.num_items.item() > 0


def test_fixed_weighting_of_the_components_is_the_weighted_sum():
    from losses.weighting import make_weighting

    encoder, x, y = encoder_and_batch(5)
    emb = encoder(x)
    loss = CombinedLoss(embedding_dim=E, metric="euclidean").double()
    out = loss.forward_triplets(emb[:4], emb[4:8], emb[8:12], margin=1.0)
    c = out.components
    assert tuple(c) == ("triplet", "ce_pos", "ce_neg")
    torch.testing.assert_close(c["triplet"], naive_triplet_loss(emb[:4], emb[4:8], emb[8:12], margin=1.0, metric="euclidean"))
    fixed = make_weighting("fixed", components=tuple(c), weights={"triplet": 0.5, "ce_pos": 2.0, "ce_neg": 0.25})
    torch.testing.assert_close(fixed(c, step=0).total, 0.5 * c["triplet"] + 2.0 * c["ce_pos"] + 0.25 * c["ce_neg"])


def test_ce_on_probabilities_is_an_explicit_switch_that_squashes_the_gradient():
    encoder, x, y = encoder_and_batch(6)
    emb = encoder(x).detach()
    correct = CombinedLoss(embedding_dim=E, metric="euclidean").double()
    assert correct.ce_input == "logits"  # the default is the correct CE
    buggy = CombinedLoss(embedding_dim=E, metric="euclidean", ce_input="probabilities").double()
    buggy.load_state_dict(correct.state_dict())
    with torch.no_grad():  # make the classifier confidently wrong on positive pairs
        correct.classifier.net.bias.copy_(torch.tensor([8.0, -8.0]))
        buggy.classifier.net.bias.copy_(torch.tensor([8.0, -8.0]))
    a, p = emb[:4], emb[4:8]
    good = correct.forward_triplets(a, p, emb[8:12], margin=0.1).components["ce_pos"]
    bad = buggy.forward_triplets(a, p, emb[8:12], margin=0.1).components["ce_pos"]
    logits = correct.classifier(a, p)
    torch.testing.assert_close(good, F.cross_entropy(logits, torch.ones(4, dtype=torch.long)))
    torch.testing.assert_close(bad, F.cross_entropy(torch.softmax(logits, dim=1), torch.ones(4, dtype=torch.long)))
    assert bad.item() <= math.log(1 + math.e) + 1e-9  # CE of probabilities is bounded: the bug's signature
    g_good = grads_of(good, [correct.classifier.net.bias])[0].norm()
    g_bad = grads_of(bad, [buggy.classifier.net.bias])[0].norm()
    assert g_bad < 0.01 * g_good


def test_no_triplet_gives_attached_zeros_and_nan_accuracy():
    loss = CombinedLoss(embedding_dim=E, metric="euclidean").double()
    empty = torch.zeros(0, E, dtype=torch.float64, requires_grad=True)
    out = loss.forward_triplets(empty, empty, empty, margin=0.2)
    assert all(v.item() == 0.0 and v.requires_grad for v in out.components.values())
    assert math.isnan(out.pair_accuracy.item())
    emb = torch.randn(4, E, dtype=torch.float64, requires_grad=True)
    out = loss(emb, torch.zeros(4, dtype=torch.long), margin=0.2)  # one class: no negative
    total = sum(out.components.values())
    assert total.item() == 0.0
    total.backward()
    assert torch.count_nonzero(emb.grad) == 0


def test_triplet_with_id_loss_components_and_gradients():
    encoder, x, y = encoder_and_batch(7, classes=4)
    emb = encoder(x)
    params = {"reduction": "mean", "soft": True}
    loss = TripletWithIDLoss(variant="batch_hard", metric="euclidean", num_classes=4, embedding_dim=E, variant_params=params).double()
    out = loss(emb, y, margin=None)
    assert set(out.components) == {"triplet", "ce_id"}
    torch.testing.assert_close(out.components["triplet"], batch_hard_triplet_loss(emb, y, margin=None, metric="euclidean", **params))
    torch.testing.assert_close(out.components["ce_id"], F.cross_entropy(loss.classifier(emb), y))
    assert out.id_accuracy.item() == pytest.approx((loss.classifier(emb).argmax(1) == y).double().mean().item())
    for name, value in out.components.items():
        assert sum(float(g.abs().sum()) for g in grads_of(value, list(encoder.parameters()))) > 0, name


def test_triplet_with_id_loss_learns_the_classes():
    emb, y = separable_embeddings(6, 5, seed=3)
    loss = TripletWithIDLoss(variant="batch_all", metric="euclidean", num_classes=5, embedding_dim=E).double()
    opt = torch.optim.Adam(loss.parameters(), lr=0.1)
    for _ in range(30):
        out = loss(emb, y, margin=0.2, return_stats=False)
        opt.zero_grad()
        sum(out.components.values()).backward()
        opt.step()
    assert out.id_accuracy.item() == 1.0 and out.stats is None


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: CombinedLoss(embedding_dim=E, metric="euclidean", ce_input="softmax"), "unknown ce_input 'softmax'; valid: 'logits', 'probabilities'"),
        (lambda: CombinedLoss(embedding_dim=E, metric="l1"), "unknown metric 'l1'"),
        (lambda: CombinedLoss(embedding_dim=E, metric="euclidean", pairs="random"), "unknown pairs 'random'; valid: 'hardest', 'all'"),
        (lambda: CombinedLoss(embedding_dim=E, metric="euclidean", variant="naive"), "unknown variant 'naive'; valid: 'batch_all'"),
        (lambda: CombinedLoss(embedding_dim=0, metric="euclidean"), "embedding_dim to be an int >= 1, got 0"),
        (lambda: CombinedLoss(embedding_dim=E, metric="euclidean", variant_params={"metric": "cosine"}), r"must not set \['metric'\]"),
        (lambda: TripletWithIDLoss(variant="hard", metric="euclidean", num_classes=3, embedding_dim=E), "unknown variant 'hard'"),
    ],
)
def test_bad_configuration_raises_naming_it(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_call_input_raises_naming_it():
    loss = CombinedLoss(embedding_dim=E, metric="euclidean").double()
    emb = torch.randn(8, E, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"embeddings of dimension 6 \(embedding_dim\), got 3"):
        loss(emb[:, :3], torch.arange(8) % 2, margin=0.1)
    with pytest.raises(ValueError, match="expected anchor, positive, negative of the same shape"):
        loss.forward_triplets(emb[:3], emb[3:6], emb[6:8], margin=0.1)
    ident = TripletWithIDLoss(variant="batch_hard", metric="euclidean", num_classes=2, embedding_dim=E).double()
    with pytest.raises(ValueError, match=r"labels in \[0, 2\) \(num_classes\), got range \[0, 3\]"):
        ident(emb, torch.arange(8) % 4, margin=0.1)


@pytest.mark.cuda
def test_cuda_combined_and_weighting_run_unchanged():
    from losses.weighting import make_weighting

    encoder, x, y = encoder_and_batch(8)
    encoder, x, y = encoder.cuda(), x.cuda(), y.cuda()
    loss = CombinedLoss(embedding_dim=E, metric="euclidean").double().cuda()
    out = loss(encoder(x), y, margin=1.0)
    for name, params in [("gradnorm", {}), ("grad_norm_balance", {}), ("inverse_ema", {}), ("uncertainty", {})]:
        w = make_weighting(name, components=tuple(out.components), **params).cuda()
        step = w(out.components, step=0, shared=list(encoder.parameters()))
        assert step.total.device.type == "cuda" and torch.isfinite(step.total)
    ident = TripletWithIDLoss(variant="batch_hard", metric="euclidean", num_classes=4, embedding_dim=E).double().cuda()
    assert all(torch.isfinite(v) for v in ident(encoder(x), y, margin=0.5).components.values())


def _focal_loop(logits, target, gamma, alpha):
    """Loop reference of the focal loss: mean of -alpha_t (1 - p_t)^gamma log p_t."""
    total = 0.0
    for row, t in zip(logits.tolist(), target.tolist()):
        top = max(row)
        log_p = row[t] - top - math.log(sum(math.exp(v - top) for v in row))
        weight = 1.0 if alpha is None else (alpha if t == 1 else 1.0 - alpha)
        total += -weight * (1.0 - math.exp(log_p)) ** gamma * log_p
    return total / len(target)


@pytest.mark.parametrize("gamma, alpha, classes", [(2.0, None, 2), (2.0, 0.25, 2), (0.5, 0.75, 2), (1.5, None, 5)])
def test_focal_matches_a_loop_reference(gamma, alpha, classes):
    from losses.combined import cross_entropy

    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(9, classes, dtype=torch.float64, generator=g)
    target = torch.randint(0, classes, (9,), generator=g)
    value = cross_entropy(logits, target, ce_input="logits", anchor=logits, ce="focal", focal_gamma=gamma, focal_alpha=alpha)
    assert math.isclose(float(value), _focal_loop(logits, target, gamma, alpha), rel_tol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_gradient_is_finite_on_certain_items(dtype, gamma):
    from losses.combined import cross_entropy

    logits = torch.tensor([[60.0, -60.0], [0.3, 0.1]], dtype=dtype, requires_grad=True)  # p_t rounds to 1
    value = cross_entropy(logits, torch.tensor([0, 1]), ce_input="logits", anchor=logits, ce="focal", focal_gamma=gamma)
    (grad,) = torch.autograd.grad(value, logits)
    assert torch.isfinite(grad).all() and torch.isfinite(value)


def test_focal_with_gamma_0_and_no_alpha_is_the_cross_entropy():
    from losses.combined import cross_entropy

    logits = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2, 1, 0, 2, 2])
    focal = cross_entropy(logits, target, ce_input="logits", anchor=logits, ce="focal", focal_gamma=0.0, focal_alpha=None)
    ce = cross_entropy(logits, target, ce_input="logits", anchor=logits)
    torch.testing.assert_close(focal, ce, rtol=1e-14, atol=0)
    torch.testing.assert_close(torch.autograd.grad(focal, logits)[0], torch.autograd.grad(ce, logits)[0], rtol=1e-12, atol=1e-15)


def test_focal_in_combined_and_id_losses():
    encoder, x, y = encoder_and_batch(4)
    emb = encoder(x)
    torch.manual_seed(0)
    plain = CombinedLoss(embedding_dim=E, metric="euclidean").double()
    torch.manual_seed(0)
    focal = CombinedLoss(embedding_dim=E, metric="euclidean", ce="focal", focal_gamma=2.0, focal_alpha=0.25).double()
    a, b = plain(emb, y, margin=0.2), focal(emb, y, margin=0.2)
    assert torch.equal(a.components["triplet"], b.components["triplet"])
    assert 0 < float(b.components["ce_pos"].detach()) < float(a.components["ce_pos"].detach())  # down-weighted: alpha and (1 - p)^gamma < 1
    ident = TripletWithIDLoss(variant="batch_hard", metric="euclidean", num_classes=4, embedding_dim=E, ce="focal").double()
    assert float(ident(emb, y, margin=0.2).components["ce_id"].detach()) > 0
    with pytest.raises(ValueError, match="focal_alpha"):
        TripletWithIDLoss(variant="batch_hard", metric="euclidean", num_classes=4, embedding_dim=E, ce="focal", focal_alpha=0.25)
    for bad, match in [({"ce": "fokal"}, "unknown ce"), ({"ce": "focal", "focal_gamma": -1.0}, "focal_gamma"),
                       ({"ce": "focal", "focal_alpha": 1.0}, "focal_alpha")]:
        with pytest.raises(ValueError, match=match):
            CombinedLoss(embedding_dim=E, metric="euclidean", **bad)


@pytest.mark.parametrize("loss_name", ["combined", "triplet_ce"])
def test_a_runs_fixed_total_is_the_weighted_sum_of_its_components(loss_name):
    """The total a fixed-weighted run trains on: w_triplet * triplet + w_pos * ce_pos + w_neg * ce_neg
    (combined) or w_triplet * triplet + w_ce * ce_id (triplet_ce), each term recomputed here from
    its definition (the naive or batch-hard loss, the heads' cross-entropies)."""
    from ablations.config import resolve_config
    from ablations.objectives import build_objective, weighting_params
    from losses.weighting import make_weighting

    weights = {"w_triplet": 0.7, "w_pos": 1.9, "w_neg": 0.35, "w_ce": 1.3}
    config = resolve_config({"loss": loss_name, "weighting": "fixed", "embedding_dim": E, "id_variant": "batch_hard",
                             **weights})  # the weights of other losses' components are unused
    objective = build_objective(config, num_classes=4)
    weighting = make_weighting("fixed", components=objective.components, **weighting_params(config, objective.components))
    torch.manual_seed(9)
    emb, y = torch.randn(16, E), torch.arange(16) % 4  # float32, as a run
    if loss_name == "combined":
        a, p, n = emb[:5], emb[5:10], emb[10:15]
        step = objective.forward_triplets(a, p, n, margin=config.margin)
        head = objective.loss.classifier
        with torch.no_grad():
            triplet = naive_triplet_loss(a, p, n, margin=config.margin, metric=config.metric)
            ce_pos = F.cross_entropy(head(a, p), torch.ones(5, dtype=torch.long))
            ce_neg = F.cross_entropy(head(a, n), torch.zeros(5, dtype=torch.long))
        old = weights["w_triplet"] * triplet + weights["w_pos"] * ce_pos + weights["w_neg"] * ce_neg
    else:
        step = objective(emb, y, margin=config.margin)
        with torch.no_grad():
            triplet = batch_hard_triplet_loss(emb, y, margin=config.margin, metric=config.metric)
            ce_id = F.cross_entropy(objective.loss.classifier(emb), y)
        old = weights["w_triplet"] * triplet + weights["w_ce"] * ce_id
    total = weighting(step.components, step=0).total
    assert total.dtype == torch.float32 and float(old) > 0
    torch.testing.assert_close(total.detach(), old)
