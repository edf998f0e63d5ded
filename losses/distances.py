"""Distance matrices (pairwise and paired) and the per-anchor sorted positive distances."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .masks import negative_mask, positive_mask
from .validation import check_choice, check_embeddings, check_labels, check_same_shape

METRICS = ("euclidean", "squared_euclidean", "cosine")


def pairwise_distances(x: torch.Tensor, *, metric: str) -> torch.Tensor:
    """x (B, D) float -> (B, B) distances; diagonal and duplicate rows exactly 0, finite gradients.

    "euclidean" is sqrt(|x_i - x_j|^2), "squared_euclidean" |x_i - x_j|^2, "cosine"
    1 - cos(x_i, x_j) (rows L2-normalised, clamped to [0, 2]). The squared distance uses
    the expansion |a|^2 + |b|^2 - 2ab (O(B^2) memory and a matrix product; the difference
    form needs a (B, B, D) tensor), clamped at 0, after subtracting the rounded batch mean
    (which leaves distances unchanged and shrinks the cancellation error for translated
    batches). The matrix is exactly symmetric, and rows that are exactly equal get
    exactly 0 between them and bitwise identical distances to every other row (the
    expansion would leave a rounding residue of about eps * |x|^2 that differs from row
    to row, so a duplicate of a positive could count as farther than it); the square
    root is safe at 0: its
    gradient there is 0, as for torch.cdist, never NaN. Backward is one matrix product
    (a custom autograd Function); double backward (create_graph=True: second derivatives,
    gradient penalties, GradNorm) is supported, in differentiable operations. float16 and
    bfloat16 inputs are computed, and returned, in float32 (`working_precision`).

    Rows of huge or tiny norm (max |x| outside the range whose squares the expansion can
    hold, `scale_exponent`) are computed on x * 2^-e, exact in floating point, and the
    distances scaled back by 2^e (2^2e squared): finite wherever the distances are
    representable in x's dtype; where they are not (squared distances of float32 rows
    of norm 1e19, say) a ValueError names the dtype and suggests float64.
    """
    check_embeddings(x, name="x")
    check_choice(metric, name="metric", valid=METRICS)
    return _pairwise_distances(x, metric=metric)


def paired_distances(a: torch.Tensor, b: torch.Tensor, *, metric: str) -> torch.Tensor:
    """a (N, D) float, b (N, D) float -> (N,) distances d(a_i, b_i) (difference form, exact; float32 for half inputs).

    Plain autograd (double backward too); rows of huge or tiny norm scaled by a power of
    two and the distances scaled back, as `pairwise_distances` (the same ValueError where
    a distance overflows the dtype).
    """
    check_embeddings(a, name="a", min_rows=0)
    check_embeddings(b, name="b", min_rows=0)
    check_same_shape(a=a, b=b)
    check_choice(metric, name="metric", valid=METRICS)
    return _paired_distances(a, b, metric=metric)


HALF_DTYPES = (torch.float16, torch.bfloat16)


def working_precision(x: torch.Tensor) -> torch.Tensor:
    """x float -> x, as float32 when it is float16 or bfloat16 (differentiable: its gradient comes back in x's dtype).

    Half-precision distances overflow (float16 above 65504: a squared distance of rows of
    norm 200) or lose the small differences the losses compare, so every distance is
    computed in float32 from half inputs and the losses come back in float32, as torch.autocast
    does for cdist and the losses.
    """
    return x.float() if isinstance(x, torch.Tensor) and x.dtype in HALF_DTYPES else x  # non-tensors: validation names them


def scale_exponent(*xs: torch.Tensor, metric: str) -> int:
    """xs (N_i, D) of one dtype -> e (int): the distances of xs * 2^-e are safe to compute; 0 almost always.

    e != 0 only when max |x| (over all xs; one reduction, O(N D)) lies outside
    [2^low, 2^high]: high keeps every partial sum of the expansion |a|^2 + |b|^2 - 2ab
    (at most 16 (D + 2) max|x|^2 after centring) finite; low keeps the squares of
    differences of relative size eps normal (not subnormal or 0), and for "cosine" keeps
    the row norms far above F.normalize's eps (1e-12). Scaled rows have max |x| in
    [2^19, 2^20) (huge rows) or [2^-10, 2^-9) (tiny ones): near 1, so that products with
    the gradients of their distances and the second derivatives (about 1 / d^3 times a
    gradient, in double backward) stay inside the range, and not at 1 exactly, so that
    gradients times 2^e (the plain-autograd paired distances) stay finite and normal.
    Scaling by a power of two is exact, so the normal path (e = 0) is unchanged, bit for bit.
    """
    xs = tuple({id(t): t for t in xs}.values())  # a tensor passed twice (references = the batch) once
    x = xs[0]
    finfo = torch.finfo(x.dtype)
    high = math.floor(math.log2(math.sqrt(finfo.max / (32 * (x.shape[1] + 2)))))
    low = -20 if metric == "cosine" else math.ceil(math.log2(math.sqrt(finfo.tiny) / finfo.eps))
    extremes = [m for t in xs if t.numel() for m in torch.aminmax(t.detach())]  # no |x| copy: measured 1.5x faster
    if not extremes:
        return 0
    largest = float(torch.stack(extremes).abs().max())
    if largest == 0.0:
        return 0
    _, exponent = math.frexp(largest)  # largest = m 2^exponent, 0.5 <= m < 1
    if exponent > high:
        return exponent - 20  # scaled max in [2^19, 2^20)
    if exponent <= low:
        return exponent + 9  # scaled max in [2^-10, 2^-9)
    return 0


def scaled_back(d: torch.Tensor, exponent: int, *, metric: str, dtype: torch.dtype) -> torch.Tensor:
    """d distances of rows scaled by 2^-exponent -> the distances of the rows themselves (differentiable).

    Euclidean distances times 2^exponent, squared ones times 2^exponent twice (2^2e may
    not be representable itself), cosine unchanged. A distance that overflows `dtype`
    raises ValueError (checked only when the rows were scaled down: nothing else can overflow).
    """
    if exponent == 0 or metric == "cosine":
        return d
    factor = 2.0 ** exponent
    d = d * factor
    if metric == "squared_euclidean":
        d = d * factor
    if exponent > 0 and not bool(torch.isfinite(d.detach()).all()):
        raise ValueError(f"{metric} distances of these embeddings exceed the {dtype} range "
                         f"(largest {torch.finfo(dtype).max:.3g}): pass float64 embeddings (embeddings.double())")
    return d


def _scaled(x: torch.Tensor, exponent: int) -> torch.Tensor:
    """x -> x * 2^-exponent (exact; differentiable), x itself when exponent is 0."""
    return x * 2.0 ** -exponent if exponent else x


def _paired_distances(a: torch.Tensor, b: torch.Tensor, *, metric: str, exponent: int | None = None) -> torch.Tensor:
    """a (N, D), b (N, D) -> (N,), unchecked; float32 for half inputs; rows of huge or tiny norm scaled.

    exponent: `scale_exponent` of a and b, or of a set holding their rows (computed when None).
    """
    a, b = working_precision(a), working_precision(b)
    dtype = a.dtype
    exponent = scale_exponent(a, b, metric=metric) if exponent is None else exponent
    a, b = _scaled(a, exponent), _scaled(b, exponent)
    if metric == "cosine":
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        d = (1.0 - (a * b).sum(dim=1)).clamp(0.0, 2.0)  # (N,)
        return torch.where((a.detach() == b.detach()).all(dim=1), 0.0, d)  # equal rows: exactly 0, as pairwise
    sq = (a - b).pow(2).sum(dim=1)  # (N,)
    return scaled_back(_safe_sqrt(sq) if metric == "euclidean" else sq, exponent, metric=metric, dtype=dtype)


def _pairwise_distances(x: torch.Tensor, *, metric: str) -> torch.Tensor:
    """x (B, D) -> (B, B), unchecked; float32 for half inputs."""
    x = working_precision(x)
    if metric == "cosine":
        x = _scaled(x, scale_exponent(x, metric=metric))  # exact: equal rows stay equal
        xn = F.normalize(x, dim=1)
        half = 0.5 - 0.5 * (xn @ xn.T)  # (B, B) half distances
        d = (half + half.T).clamp(0.0, 2.0)  # (B, B) exactly symmetric: a + b == b + a
        first = _first_equal_row(x.detach())  # (B,) raw rows compared
        with torch.no_grad():
            exact = _with_equal_rows_equal(d.detach(), first)  # (B, B) values
        return d + (exact - d).detach()  # values of `exact`, gradient of d (each row its own)
    return _EuclideanDistances.apply(x, metric == "euclidean")


def cross_distances(anchors: torch.Tensor, references: torch.Tensor, *, metric: str) -> torch.Tensor:
    """anchors (B, D) float, references (M, D) float -> (B, M) distances d(anchor_i, reference_j).

    The same metrics and guarantees as `pairwise_distances`, between two sets: an anchor
    exactly equal to a reference is exactly 0 from it, exactly equal references give
    bitwise identical columns and exactly equal anchors identical rows (a duplicate in the
    memory is never closer or farther than its original), the square root's gradient is 0
    at 0. Euclidean: |a|^2 + |r|^2 - 2 a r (one matrix product, after subtracting the
    references' rounded mean), backward two matrix products (a custom autograd Function),
    a gradient to the references only when they require one; double backward supported.
    Rows of huge or tiny norm scaled by a power of two, as `pairwise_distances` (the
    exponent from both sets). float16 / bfloat16 -> float32.
    """
    check_embeddings(anchors, name="anchors")
    check_embeddings(references, name="references")
    if anchors.shape[1] != references.shape[1]:
        raise ValueError(f"expected anchors and references of one dimension D, got anchors "
                         f"{tuple(anchors.shape)} and references {tuple(references.shape)}")
    if anchors.device != references.device:
        raise ValueError(f"expected references on {anchors.device} (the anchors' device), got {references.device}")
    check_choice(metric, name="metric", valid=METRICS)
    return _cross_distances(anchors, references, metric=metric)


def _cross_distances(a: torch.Tensor, r: torch.Tensor, *, metric: str) -> torch.Tensor:
    """a (B, D), r (M, D) -> (B, M), unchecked; float32 for half inputs."""
    a, r = working_precision(a), working_precision(r)
    if a.dtype != r.dtype:
        r = r.to(a.dtype)  # a memory kept in another precision: compared in the anchors'
    if metric == "cosine":
        exponent = scale_exponent(a, r, metric=metric)
        an, rn = F.normalize(_scaled(a, exponent), dim=1), F.normalize(_scaled(r, exponent), dim=1)
        d = (1.0 - an @ rn.T).clamp(0.0, 2.0)  # (B, M)
        with torch.no_grad():
            exact = _with_equal_rows_equal_cross(d.detach().clone(), a.detach(), r.detach())
        return d + (exact - d).detach()  # values of `exact`, gradient of d
    return _EuclideanCrossDistances.apply(a, r, metric == "euclidean")


def _with_equal_rows_equal_cross(d: torch.Tensor, a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """d (B, M), a (B, D), r (M, D) -> d with equal references' columns and equal anchors' rows identical,
    0 where an anchor equals a reference (in place when nothing repeats)."""
    B, M = d.shape
    group = _first_equal_row(torch.cat([r, a]))  # (M + B,): references first, so a reference's group is a column
    first_r, group_a = group[:M], group[M:]  # (M,), (B,)
    first_a = torch.full((M + B,), B, dtype=torch.long, device=d.device).scatter_reduce_(
        0, group_a, torch.arange(B, device=d.device), "amin")[group_a]  # (B,) first anchor of each group
    if bool((first_r != torch.arange(M, device=d.device)).any()):
        d = d[:, first_r]
    if bool((first_a != torch.arange(B, device=d.device)).any()):
        d = d[first_a]
    equal = (group_a < M).nonzero().squeeze(1)  # (E,) anchors equal to a reference
    if equal.numel():
        d[equal] = d[equal].masked_fill_(first_r[None, :] == group_a[equal, None], 0.0)
    return d


class _EuclideanCrossDistances(torch.autograd.Function):
    """a (B, D), r (M, D) -> (B, M) euclidean (root=True) or squared euclidean distances.

    Forward: on both sets scaled by 2^-e (`scale_exponent`; e = 0 but for huge or tiny
    norms) and centred by the references' rounded mean, one matrix product of rows
    augmented with (|x|^2, 1); clamped at 0, rooted, equal rows made equal, scaled back
    (`scaled_back`). Backward, with W = dL/d(d^2) (0 where the distance is 0):
    dL/da = 2 (rowsum W a - W r), dL/dr = 2 (colsum W r - W^T a), the latter only when r
    requires a gradient, on the scaled rows (`_scaled_gradient_terms`). Double backward
    (create_graph=True) is supported: the backward is then written in differentiable
    operations on the saved inputs and output, which autograd differentiates in a, r and
    the output gradient.
    """

    @staticmethod
    def forward(ctx, a, r, root):
        metric = "euclidean" if root else "squared_euclidean"
        exponent = scale_exponent(a, r, metric=metric)
        a_s, r_s = _scaled(a.detach(), exponent), _scaled(r.detach(), exponent)  # exact: powers of two
        centre = torch.round(r_s.mean(dim=0))  # (D,) distances unchanged
        ac, rc = a_s - centre, r_s - centre  # (B, D), (M, D)
        sa, sr = (ac * ac).sum(dim=1, keepdim=True), (rc * rc).sum(dim=1, keepdim=True)  # (B, 1), (M, 1)
        left = torch.cat([ac, sa, torch.ones_like(sa)], dim=1)  # (B, D + 2)
        right = torch.cat([-2.0 * rc, torch.ones_like(sr), sr], dim=1)  # (M, D + 2)
        d = torch.mm(left, right.T).clamp_min_(0.0)  # (B, M)
        if root:
            d.sqrt_()
        d = scaled_back(_with_equal_rows_equal_cross(d, ac, rc), exponent, metric=metric, dtype=d.dtype)
        # an input that requires a gradient is saved itself (double backward differentiates through it), one
        # that does not as its centred copy: a memory written to before the backward is not read again
        ctx.centred = (not a.requires_grad, not r.requires_grad)
        ctx.save_for_backward(ac if ctx.centred[0] else a, rc if ctx.centred[1] else r, centre, d)
        ctx.root, ctx.exponent = root, exponent
        return d

    @staticmethod
    def backward(ctx, grad):
        a, r, centre, d = ctx.saved_tensors
        ac, rc = (x if centred else _scaled(x, ctx.exponent) - centre
                  for x, centred in zip((a, r), ctx.centred))  # (B, D), (M, D) as forward
        w, factor = _scaled_gradient_terms(grad, d, ctx.root, ctx.exponent, ac, rc)  # (B, M)
        grad_a = factor * (w.sum(dim=1, keepdim=True) * ac - w @ rc)  # (B, D)
        grad_r = None
        if ctx.needs_input_grad[1]:
            grad_r = factor * (w.sum(dim=0)[:, None] * rc - w.T @ ac)  # (M, D)
        return grad_a, grad_r, None


def _scaled_gradient_terms(grad: torch.Tensor, d: torch.Tensor, root: bool, exponent: int,
                           ac: torch.Tensor, rc: torch.Tensor):
    """grad (B, M) dL/dd, d (B, M) the output, ac (B, D), rc (M, D) the centred rows scaled by 2^-exponent
    -> (W (B, M), factor float): dL/da_i = factor * sum_j W_ij (ac_i - rc_j).

    Root: W = grad / d_s, d_s the scaled rows' distances (0 where d == 0: the safe root),
    factor 1 (the powers of two cancel); squared: W = grad, factor 2^(1 + exponent).
    Under torch.is_grad_enabled() (double backward) W is made by differentiable,
    out-of-place operations: 1 / d_s recomputed from ac and rc (its derivative then stays
    in the scaled rows' range; through d it would carry 2^-exponent and underflow), masked
    before it is taken where d == 0, so the graph is finite. Otherwise by a division whose
    0 / 0 and x / 0 are zeroed in place.
    """
    if not root:
        return grad, 2.0 ** (1 + exponent)
    if torch.is_grad_enabled():
        square = (ac * ac).sum(dim=1, keepdim=True) + (rc * rc).sum(dim=1) - 2.0 * (ac @ rc.T)  # (B, M) d_s^2
        zero = (d.detach() == 0) | (square.detach() <= 0)
        return grad * torch.where(zero, 0.0, torch.rsqrt(torch.where(zero, 1.0, square))), 1.0
    return torch.div(grad, _scaled(d, exponent)).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0), 1.0


class _EuclideanDistances(torch.autograd.Function):
    """x (B, D) -> (B, B) euclidean (root=True) or squared euclidean distances.

    Forward, on the batch scaled by 2^-e (`scale_exponent`; e = 0 but for huge or tiny
    norms) and centred by its rounded mean, by panels of rows (`_panel_rows`):
    |a|^2 + |b|^2 - 2ab for the panel's columns from its diagonal on, by one matrix
    product of rows augmented with (|x|^2, 1); the diagonal block averaged with its
    transpose, clamped at 0 and rooted while in cache, then mirrored below the diagonal:
    exactly symmetric, half the products, no full transposed pass. Equal rows made equal,
    the distances scaled back (`scaled_back`).
    Backward: with W = dL/d(d^2) (0 where the distance is 0: the safe root),
    dL/dx = 2 ((rowsum W + colsum W) x - W x - W^T x) on the scaled rows
    (`_scaled_gradient_terms`), panel by panel (each panel of W is made, summed and
    multiplied while in cache), no graph of (B, B) temporaries. Double backward
    (create_graph=True) is supported: the backward is then the same formula in
    differentiable operations on the saved input and output (no in-place), which
    autograd differentiates in x and in the output gradient.
    """

    @staticmethod
    def forward(ctx, x, root):
        metric = "euclidean" if root else "squared_euclidean"
        exponent = scale_exponent(x, metric=metric)
        x_s = _scaled(x.detach(), exponent)  # exact: a power of two
        centre = torch.round(x_s.mean(dim=0))  # (D,) distances unchanged
        xc = x_s - centre  # (B, D)
        sq = (xc * xc).sum(dim=1, keepdim=True)  # (B, 1)
        ones = torch.ones_like(sq)
        left, right = torch.cat([xc, sq, ones], dim=1), torch.cat([-2.0 * xc, ones, sq], dim=1)  # (B, D + 2) x 2
        B = x.shape[0]
        d = torch.empty((B, B), dtype=xc.dtype, device=xc.device)
        step = _panel_rows(B, xc.device)
        for start in range(0, B, step):
            stop = min(start + step, B)
            panel = d[start:stop, start:]  # (R, B - start): the diagonal block, then the columns after it
            torch.mm(left[start:stop], right[start:].T, out=panel)
            block = panel[:, : stop - start]
            block.copy_((block + block.T) * 0.5)  # exactly symmetric: a + b == b + a
            panel.clamp_min_(0.0)
            if root:
                panel.sqrt_()
            d[stop:, start:stop] = panel[:, stop - start :].T  # mirrored: exactly symmetric
        d = scaled_back(_with_equal_rows_equal(d, _first_equal_row(xc)), exponent, metric=metric, dtype=d.dtype)
        ctx.save_for_backward(x, centre, d)
        ctx.root, ctx.exponent = root, exponent
        return d

    @staticmethod
    def backward(ctx, grad):
        x, centre, d = ctx.saved_tensors
        xc = _scaled(x, ctx.exponent) - centre  # (B, D) as forward
        if torch.is_grad_enabled():  # double backward (create_graph): differentiable in x, d and grad
            w, factor = _scaled_gradient_terms(grad, d, ctx.root, ctx.exponent, xc, xc)  # (B, B)
            rows_and_cols = w.sum(dim=1, keepdim=True) + w.sum(dim=0)[:, None]  # (B, 1)
            return factor * (rows_and_cols * xc - w @ xc - w.T @ xc), None
        B = d.shape[0]
        d_s = _scaled(d, ctx.exponent) if ctx.root else None  # (B, B) the scaled rows' distances (d when not scaled)
        step = _panel_rows(B, xc.device)
        w_buf = torch.empty((min(step, B), B), dtype=xc.dtype, device=xc.device) if ctx.root else None
        rows = torch.empty((B, 1), dtype=xc.dtype, device=xc.device)  # row sums of W
        cols = torch.zeros(B, dtype=xc.dtype, device=xc.device)  # column sums of W
        w_x = torch.empty_like(xc)  # W x
        wt_x = torch.zeros_like(xc)  # W^T x
        for start in range(0, B, step):
            stop = min(start + step, B)
            if ctx.root:  # W = grad / (2 d), 0 where d == 0 (grad / 0 is inf or nan)
                w = torch.div(grad[start:stop], d_s[start:stop], out=w_buf[: stop - start])
                w.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)  # (R, B) 2 dL/d(d^2)
            else:
                w = grad[start:stop]  # (R, B) dL/d(d^2)
            torch.sum(w, dim=1, keepdim=True, out=rows[start:stop])
            cols += w.sum(dim=0)
            torch.mm(w, xc, out=w_x[start:stop])
            wt_x.addmm_(w.T, xc[start:stop])
        factor = 1.0 if ctx.root else 2.0 ** (1 + ctx.exponent)
        return factor * ((rows + cols[:, None]) * xc - w_x - wt_x), None


def _panel_rows(batch_size: int, device: torch.device) -> int:
    """-> rows per panel of the distance matrix's forward and backward: 256 on CPU (measured best of
    128-512 at B = 1024 and 4096: the panel's passes stay in cache), the whole matrix elsewhere."""
    return 256 if device.type == "cpu" else batch_size


def _first_equal_row(x: torch.Tensor) -> torch.Tensor:
    """x (B, D) -> (B,) int64: the first row of x exactly equal to each row.

    Screen in O(B D + B log B): a weighted row sum h = x w in float64, sorted; exactly equal
    rows have computed sums within 2 (D + 2) eps max|x| sum(w) (a rigorous bound in any summation order),
    so they lie in one run of sorted values whose neighbours are that close. Rows in such
    runs (usually none, or a few pairs) are then compared exactly with the other rows of
    their run; when the runs hold many pairs (more than 8 B to compare), the rows are
    grouped by `torch.unique` instead (a sort of the rows, O(B D log B)).
    """
    B, D = x.shape
    index = torch.arange(B, device=x.device)
    wide = x.double()  # float64 sums: a tight bound (float32 sums leave thousands of false candidates at B=4096)
    weights = torch.linspace(1.0, 2.0, D, dtype=torch.float64, device=x.device)  # (D,)
    h = wide @ weights  # (B,)
    low, high = torch.aminmax(x.detach())
    bound = 2 * (D + 2) * torch.finfo(torch.float64).eps * torch.maximum(-low, high).double() * weights.sum()
    h_sorted, order = torch.sort(h)
    close = h_sorted[1:] - h_sorted[:-1] <= bound  # (B - 1,) neighbours that may be equal rows
    if not bool(close.any()):
        return index
    run = torch.cat([index[:1], torch.cumsum(~close, 0)])  # (B,) run number of each sorted position
    in_run = torch.cat([close, close[-1:] & False]) | torch.cat([close[:1] & False, close])  # (B,) run of >= 2
    members, member_run = order[in_run], run[in_run]  # (M,) in sorted order: runs are contiguous
    sizes = torch.unique_consecutive(member_run, return_counts=True)[1]  # (runs,)
    if int((sizes * sizes).sum()) > 8 * B + 64:  # pairs within runs
        _, group = torch.unique(x, dim=0, return_inverse=True)  # (B,)
        first = torch.full((B,), B, dtype=torch.long, device=x.device).scatter_reduce(0, group, index, "amin")
        return first[group]
    size = sizes.repeat_interleave(sizes)  # (M,) each member's run size
    start = (torch.cumsum(sizes, 0) - sizes).repeat_interleave(sizes)  # (M,) its run's first member
    rows = torch.arange(members.numel(), device=x.device).repeat_interleave(size)  # (C,) every pair of a run
    cols = start[rows] + torch.arange(rows.numel(), device=x.device) - (torch.cumsum(size, 0) - size)[rows]
    rows, cols = members[rows], members[cols]
    equal = (x[rows] == x[cols]).all(dim=1)  # (C,)
    return index.scatter_reduce(0, rows[equal], cols[equal], "amin")


def _with_equal_rows_equal(d: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """d (B, B) symmetric, first (B,) from _first_equal_row -> (B, B): 0 on the diagonal, rows of equal x identical.

    Equal rows of x get the first one's row and column of d, so their distances to every
    other row are bitwise equal (a duplicate of a positive is then never closer or farther
    than it) and their mutual distance is exactly 0. d is changed in place when no row repeats.
    """
    d.diagonal().zero_()
    if bool((first != torch.arange(first.shape[0], device=first.device)).any()):
        d = d[first][:, first]  # symmetric still: d[f_i, f_j] == d[f_j, f_i]
    return d


def _safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    """sq (...) >= 0 -> sqrt(sq), with value and gradient exactly 0 where sq == 0."""
    zero = sq == 0
    return torch.where(zero, 0.0, torch.sqrt(torch.where(zero, 1.0, sq)))


def sorted_positive_distances(
    dist: torch.Tensor, labels: torch.Tensor, *, members: torch.Tensor | None = None,
    real: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dist (B, M), labels (B,) int -> (values (B, P) float, index (B, P) int64), P = max(1, most positives).

    Row a holds the anchor's positive distances d(a, p), p != a, y_p == y_a, ascending,
    after -inf padding in front when a has fewer than P positives; index holds the
    matching p (a padding column of `members` for padding: a column that is never a negative
    of a). Differentiable through `values`. The columns of
    each class come from sorting the labels once (O(B log B)), so only B (P + 1) entries
    of dist are read and sorted: no (B, B) mask or top-k. In P x K batches P = K - 1, so
    searches in these rows cost log K, far less than sorting the negatives. `members`:
    class_members(labels) when the caller has it already (in-batch: M = B, column a is the
    anchor itself); against references, `members` and `real` from `reference_members`.
    """
    B = labels.shape[0]
    members = class_members(labels) if members is None else members  # (B, W), padded with the sample itself
    if real is None:  # in-batch: positives are the class columns but the anchor's own
        real = members != torch.arange(B, device=dist.device)[:, None]  # (B, W) not self, not padding
    if not bool(real.any()):  # no positive pair at all
        return torch.full((B, 1), -torch.inf, dtype=dist.dtype, device=dist.device), members[:, :1].clone()
    values = torch.where(real, dist.gather(1, members), -torch.inf)  # (B, W), -inf off the positives
    values, at = torch.sort(values, dim=1)  # ascending: -inf padding in front
    P = int(real.sum(dim=1).max())
    return values[:, -P:], members.gather(1, at[:, -P:])


def class_members(labels: torch.Tensor) -> torch.Tensor:
    """labels (B,) int -> (B, W) int64: row i lists the columns of i's class (i included), then i again as padding.

    W is the largest class size. From one sort of the labels (O(B log B)): no (B, B) mask.
    """
    return reference_members(labels, labels, torch.arange(labels.shape[0], device=labels.device))[0]


def reference_members(
    labels: torch.Tensor, reference_labels: torch.Tensor, self_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """labels (B,) int, reference_labels (M,) int, self_index (B,) int64 (the anchor's own column, or -1)
    -> members (B, W) int64, real (B, W) bool, same (B,) int64.

    Row a of `members` lists the reference columns of a's class (its own column included),
    in column order, then padding: a's own column when it has one, else its class's first
    column, else column 0 (an anchor without any reference of its class has no positive, so
    its row of candidates is never read). Every entry is a column that is no negative of a.
    `real` marks the positives (class columns other than the anchor's own), `same` counts
    a's class columns (own included): M - same negatives. W = max(1, largest class size
    among the anchors' classes). From one sort of the reference labels (O(M log M + B log M)).
    """
    M = reference_labels.shape[0]
    order = torch.argsort(reference_labels, stable=True)  # (M,) members of a class are consecutive
    classes, counts = torch.unique_consecutive(reference_labels[order], return_counts=True)  # (C,) x 2
    starts = torch.cumsum(counts, 0) - counts  # (C,) the class's first position in `order`
    labels = labels.to(classes.dtype)  # int32 anchors against an int64 memory
    at = torch.searchsorted(classes, labels).clamp_max(classes.shape[0] - 1)  # (B,)
    found = classes[at] == labels  # (B,) the anchor's class is among the references
    same = torch.where(found, counts[at], 0)  # (B,)
    first = starts[at]  # (B,)
    width = max(1, int(same.max()))
    k = torch.arange(width, device=labels.device)  # (W,)
    members = order[(first[:, None] + k).clamp_max(M - 1)]  # (B, W); past the class: other columns
    pad = torch.where(self_index >= 0, self_index, torch.where(found, order[first], 0))  # (B,)
    inside = k < same[:, None]  # (B, W)
    members = torch.where(inside, members, pad[:, None])
    return members, inside & (members != self_index[:, None]), same


def negative_rows(
    d: torch.Tensor, rows: torch.Tensor, members: torch.Tensor, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """d (B, B) distances, rows (R,) int64, members (R, W) those rows' class columns (`class_members`)
    -> (R, B): d[rows], +inf off the negatives.

    A copy (into `out` when given: chunk loops reuse one buffer) with +inf scattered at each
    anchor's own class, itself included: measured 2-3x faster on CPU than masking with
    `labels[:, None] != labels` and `torch.where`.
    """
    copy = torch.index_select(d, 0, rows) if out is None else torch.index_select(d, 0, rows, out=out)
    return copy.scatter_(1, members, torch.inf)


def anchor_chunks(sorted_pos: torch.Tensor, step: int) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """sorted_pos (B, P) ascending, -inf padded in front -> order (B,) int64, chunks [(start, stop, skip)].

    `order` lists the anchors by their number of positives (fewest first); each chunk is
    order[start:stop] (at most `step` anchors), and in every row of a chunk the first `skip`
    sorted positions are padding, so the comparison loops start at `skip`. With uneven
    classes (random labels) P is the largest class's and most rows hold far fewer
    positives: measured 8.9 comparison passes per anchor instead of 15 at B = 1024,
    random labels (8.1 positives on average).
    """
    B, P = sorted_pos.shape
    real = torch.isfinite(sorted_pos).sum(dim=1)  # (B,) positives per anchor
    order = torch.argsort(real, stable=True)  # (B,) fewest positives first
    starts = range(0, B, step)
    last = torch.tensor([min(start + step, B) - 1 for start in starts], device=real.device)  # each chunk's last row
    most = real[order][last].tolist()  # each chunk's largest number of positives
    return order, [(start, min(start + step, B), P - largest) for start, largest in zip(starts, most)]


def chunk_rows(batch_size: int, device: torch.device) -> int:
    """-> rows per chunk of the (R, B) comparison loops: on CPU 64k elements per torch thread (the few
    (R, B) buffers of a loop stay in each core's L2: measured 1.5-2x faster per pass than 256k on one
    thread, equal on two), 16M on a GPU (few, large kernels: launches dominate there)."""
    elements = (1 << 16) * torch.get_num_threads() if device.type == "cpu" else 1 << 24
    return max(1, elements // batch_size)


def chunk_buffers(
    rows: int, cols: int, *, dtype: torch.dtype, device: torch.device, floats: int, longs: int = 0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """-> `floats` (rows, cols) buffers of `dtype` and `longs` (rows, cols) int64 buffers: views of one allocation.

    For the chunk loops, which reuse them for every chunk. One allocation because on CPU
    each fresh mid-sized tensor costs its page faults: measured 0.61 ms for five separate
    (128, 1024) float32 buffers (allocated and written once) against 0.03 ms for one
    (5, 128, 1024) tensor.
    """
    n, per_long = rows * cols, 64 // torch.finfo(dtype).bits  # elements per buffer, `dtype` values per int64
    whole = torch.empty(longs * n + -(-floats * n // per_long), dtype=torch.int64, device=device)
    float_part = whole[longs * n :].view(dtype)  # (>= floats * n,): int64 storage, so any offset is aligned
    return ([float_part[i * n : (i + 1) * n].view(rows, cols) for i in range(floats)],
            [whole[i * n : (i + 1) * n].view(rows, cols) for i in range(longs)])


DIRECT_COUNT_MAX = 24  # up to this many sorted values per row, direct comparisons beat torch.searchsorted


def count_sorted_below(sorted_values: torch.Tensor, queries: torch.Tensor, *, right: bool = False) -> torch.Tensor:
    """sorted_values (B, P) ascending, queries (B, Q) -> (B, Q) int64: # sorted_values[a] < queries[a, q].

    With right=True, # <= queries[a, q]. Equal to torch.searchsorted(sorted_values, queries,
    right=right) (-inf and +inf included; no NaN). For P <= DIRECT_COUNT_MAX (P = K - 1 in
    P x K batches) it compares each query with the P values, chunked over rows: measured
    2-3x faster than the binary search on CPU at B = 1024 and 4096, P = 7.
    """
    B, P = sorted_values.shape
    if P > DIRECT_COUNT_MAX:
        return torch.searchsorted(sorted_values.contiguous(), queries.contiguous(), right=right)
    out = torch.empty(queries.shape, dtype=torch.long, device=queries.device)
    rows = chunk_rows(queries.shape[1], queries.device)
    (count_buf, hit_buf), _ = chunk_buffers(min(rows, B), queries.shape[1], dtype=queries.dtype,
                                            device=queries.device, floats=2)
    for start in range(0, B, rows):
        chunk = queries[start : start + rows]  # (R, Q)
        R = chunk.shape[0]
        columns = sorted_values[start : start + rows].T.contiguous()[:, :, None].unbind(0)  # P x (R, 1)
        out[start : start + rows] = add_counts_below_(count_buf[:R].zero_(), columns, chunk, hit=hit_buf[:R],
                                                      right=right)
    return out


def add_counts_below_(
    count: torch.Tensor, columns, queries: torch.Tensor, *, hit: torch.Tensor, right: bool = False
) -> torch.Tensor:
    """count (R, Q) float, columns: (R, 1) values each, queries (R, Q) -> count, plus # columns < queries, in place.

    With right=True, # <= queries. Each comparison is written as 0 / 1 into the float buffer
    `hit` (R, Q) and added: exact counts, several times faster on CPU than bool outputs.
    """
    compare = torch.le if right else torch.lt
    for column in columns:
        count.add_(compare(column, queries, out=hit))
    return count


def checked_distances(embeddings: torch.Tensor, labels: torch.Tensor, *, metric: str) -> torch.Tensor:
    """embeddings (B, D) float, labels (B,) int -> dist (B, B); validates both inputs and the metric."""

    check_embeddings(embeddings)
    check_labels(labels, batch_size=embeddings.shape[0], device=embeddings.device)
    check_choice(metric, name="metric", valid=METRICS)
    return _pairwise_distances(embeddings, metric=metric)


def batch_distances(
    embeddings: torch.Tensor, labels: torch.Tensor, *, metric: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """embeddings (B, D) float, labels (B,) int -> dist (B, B), positives (B, B) bool, negatives (B, B) bool.

    Validates both inputs and the metric; the shared first step of every batch variant.
    """

    dist = checked_distances(embeddings, labels, metric=metric)
    return dist, positive_mask(labels), negative_mask(labels)
