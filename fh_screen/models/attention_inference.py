"""Fast inference for an ensemble of attention networks: members stacked into batched matmuls.

The modules of :mod:`fh_screen.models.attention` are the reference: this path computes the same
function with the same float32 arithmetic up to the order of additions (predictions agree to
about 1e-6 eV/atom; ``tests/test_attention_inference.py`` holds them within 1e-5). It is faster because

- members of one architecture run together: every linear layer is one ``torch.baddbmm`` over a
  stack of their weights, instead of one small matmul per member;
- compositions are grouped by their number of elements, so no padding is computed and attention
  needs no mask;
- what does not depend on the input is computed once, when the ensemble is built: the element
  tokens (projected element vector + learned embedding) become a lookup table, and each
  LayerNorm's scale and shift are folded into the linear layer that follows it;
- the sine features of the fractions are computed once for all members of a width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["StackedAttentionEnsemble"]

#: compositions per forward chunk: bounds memory at about members × rows × elements × d_ff floats
DEFAULT_CHUNK_ROWS = 2048


@dataclass
class _Group:
    """Stacked weights of the members that share one architecture (``positions`` in the ensemble)."""

    positions: list[int]
    n_heads: int
    frequencies: object  # (n_frequencies/2,) tensor
    tokens: object  # (M, n_elements + 1, d): projected element vector + embedding
    fraction_w: object  # (M, 2·n_frequencies + 2, d)
    fraction_b: object  # (M, 1, d)
    blocks: list[dict]
    head: list[tuple[object, object]]  # (weight (M, in, out), bias (M, 1, out)); LayerNorm folded into the first


def _stack_linear(linears, scale=None, shift=None):
    """Stacked ``(weight (M, in, out), bias (M, 1, out))`` of ``linears``; an optional LayerNorm
    affine (``scale``, ``shift`` per member) that precedes them is folded in."""
    import torch

    weights, biases = [], []
    for i, linear in enumerate(linears):
        w = linear.weight.detach().double()  # (out, in)
        b = linear.bias.detach().double()
        if scale is not None:
            b = b + w @ shift[i].detach().double()
            w = w * scale[i].detach().double()[None, :]
        weights.append(w.T.float())
        biases.append(b.float()[None, :])
    return torch.stack(weights).contiguous(), torch.stack(biases).contiguous()


class StackedAttentionEnsemble:
    """The members of an attention ensemble as stacked tensors, for fast float32 inference on CPU.

    ``networks`` are :func:`~fh_screen.models.attention.build_attention_network` modules and
    ``specs`` their :class:`~fh_screen.models.attention.AttentionSpec` (members of equal specs are
    stacked together).
    """

    def __init__(self, networks: list, specs: list) -> None:
        import torch

        self.n_members = len(networks)
        by_spec: dict = {}
        for position, spec in enumerate(specs):
            by_spec.setdefault(spec, []).append(position)
        self.groups: list[_Group] = []
        with torch.no_grad():
            for spec, positions in by_spec.items():
                members = [networks[p] for p in positions]
                self.groups.append(self._stack(spec, members, positions))

    @staticmethod
    def _stack(spec, members, positions) -> _Group:
        import torch

        tokens = torch.stack([m.project(m.element_vectors) + m.embedding.weight for m in members])
        fraction_w, fraction_b = _stack_linear([m.fraction.linear for m in members])
        blocks = []
        for layer in range(spec.n_layers):
            bl = [m.blocks[layer] for m in members]
            qkv = _stack_linear([b.qkv for b in bl], [b.norm1.weight for b in bl], [b.norm1.bias for b in bl])
            out = _stack_linear([b.out for b in bl])
            ff1 = _stack_linear([b.ff1 for b in bl], [b.norm2.weight for b in bl], [b.norm2.bias for b in bl])
            ff2 = _stack_linear([b.ff2 for b in bl])
            blocks.append({"qkv": qkv, "out": out, "ff1": ff1, "ff2": ff2})
        linears = [[m.head[i] for m in members] for i in (0, 2, 4)]
        head = [_stack_linear(linears[0], [m.norm.weight for m in members], [m.norm.bias for m in members]),
                _stack_linear(linears[1]), _stack_linear(linears[2])]
        return _Group(positions=positions, n_heads=spec.n_heads, frequencies=members[0].fraction.frequencies.clone(),
                      tokens=tokens.contiguous(), fraction_w=fraction_w, fraction_b=fraction_b, blocks=blocks, head=head)

    def predict(self, indices: np.ndarray, fractions: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
        """Members' (mean, log-scale) in standardised units, each ``(n_members, n)``.

        ``indices``/``fractions`` as from :func:`~fh_screen.models.attention.set_tensors`.
        """
        import torch

        indices = np.asarray(indices)
        fractions = np.asarray(fractions, dtype=np.float32)
        n = len(indices)
        means = np.empty((self.n_members, n), dtype=np.float32)
        logs = np.empty((self.n_members, n), dtype=np.float32)
        lengths = (fractions > 0).sum(axis=1)
        # float32 throughout: an enclosing autocast region would not change the predictions
        with torch.inference_mode(), torch.autocast("cpu", enabled=False):
            for length in np.unique(lengths):
                rows = np.flatnonzero(lengths == length)
                # set_tensors puts the present elements first, so the first `length` columns hold them
                width = max(int(length), 1)
                for start in range(0, len(rows), chunk_rows):
                    chunk = rows[start:start + chunk_rows]
                    idx = torch.as_tensor(indices[chunk, :width])
                    frac = torch.as_tensor(fractions[chunk, :width])
                    for group in self.groups:
                        mean, log_scale = self._forward(group, idx, frac)
                        means[np.ix_(group.positions, chunk)] = mean.numpy()
                        logs[np.ix_(group.positions, chunk)] = log_scale.numpy()
        return means, logs

    @staticmethod
    def _forward(group: _Group, idx, frac):
        """Stacked forward pass for rows that all hold ``idx.shape[1]`` elements (no padding)."""
        import torch
        from torch.nn import functional as F

        n, length = idx.shape
        m, _, d = group.tokens.shape
        heads = group.n_heads
        head_dim = d // heads
        f = frac.unsqueeze(-1)
        logf = torch.log10(frac.clamp_min(1e-6)).unsqueeze(-1) / 6.0 + 1.0
        angles = torch.cat([f * group.frequencies, logf * group.frequencies], dim=-1)
        phi = torch.cat([angles.sin(), angles.cos(), f, logf], dim=-1).reshape(1, n * length, -1).expand(m, -1, -1)
        x = group.tokens[:, idx.reshape(-1)]  # (M, n·L, d)
        x = x.baddbmm_(phi, group.fraction_w).add_(group.fraction_b)
        for block in group.blocks:
            weight, bias = block["qkv"]
            qkv = torch.bmm(F.layer_norm(x, (d,)), weight).add_(bias)
            # (M·n, L, 3, heads, head_dim) → q, k, v of shape (M·n, heads, L, head_dim)
            q, k, v = qkv.view(m * n, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(m, n * length, d)
            weight, bias = block["out"]
            x = x.baddbmm_(attended, weight).add_(bias)
            weight, bias = block["ff1"]
            hidden = F.gelu(torch.bmm(F.layer_norm(x, (d,)), weight).add_(bias))
            weight, bias = block["ff2"]
            x = x.baddbmm_(hidden, weight).add_(bias)
        normed = F.layer_norm(x, (d,)).view(m, n, length, d)
        weights = frac.unsqueeze(-1)
        pooled = (normed * weights).sum(dim=2) / weights.sum(dim=1).clamp_min(1e-12)
        (w1, b1), (w2, b2), (w3, b3) = group.head
        hidden = F.gelu(torch.bmm(pooled, w1).add_(b1))
        hidden = F.gelu(torch.bmm(hidden, w2).add_(b2))
        out = torch.bmm(hidden, w3).add_(b3)
        return out[..., 0], out[..., 1]
