"""Flip/rotation equivariance loss for class maps, from image-level labels only.

A CNN trained with max-pooled image labels may put its peak at a fixed offset from the finding *in
its own frame*: the score is the same, so BCE never corrects it, and flipping the data does not
either. Showing the model each image twice, as is and flipped/rotated, and asking that the two
class maps agree once mapped back to one frame (as SEAM, Wang et al. CVPR 2020, does) makes any
such offset cost something: it turns with the view, the finding does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# the 8 symmetries of a square: (horizontal flip, quarter turns)
DIHEDRAL = tuple((flip, turns) for flip in (False, True) for turns in range(4))


def random_views(num: int, square: bool, device: torch.device | str = "cpu") -> Tensor:
    """One symmetry index per image, never the identity; non-square images get no quarter turns
    (their shape would change), only a flip, a half turn or both."""
    allowed = [k for k, (flip, turns) in enumerate(DIHEDRAL) if k and (square or turns % 2 == 0)]
    choice = torch.randint(len(allowed), (num,))
    return torch.tensor(allowed)[choice].to(device)


def apply_views(x: Tensor, views: Tensor, inverse: bool = False) -> Tensor:
    """Apply symmetry ``views[n]`` (an index into ``DIHEDRAL``) to ``x[n]`` over the last two
    dimensions; ``inverse`` undoes it. Works on images and class maps alike."""
    out = torch.empty_like(x)
    for k in views.unique().tolist():
        flip, turns = DIHEDRAL[k]
        if turns % 2 and x.shape[-1] != x.shape[-2]:
            raise ValueError(f"quarter turns need square inputs, got {tuple(x.shape[-2:])}")
        members = (views == k).nonzero().flatten()
        part = x[members]
        if inverse:
            part = torch.rot90(part, -turns, dims=(-2, -1))
            out[members] = part.flip(-1) if flip else part
        else:
            part = part.flip(-1) if flip else part
            out[members] = torch.rot90(part, turns, dims=(-2, -1))
    return out


def equivariance_loss(cam: Tensor, cam_of_view: Tensor, views: Tensor, labels: Tensor) -> Tensor:
    """Symmetric KL divergence between the spatial distributions (softmax over positions) of the
    map of each image and the map of its view mapped back, averaged over the classes present.

    ``cam``, ``cam_of_view``: ``(N, C, h, w)`` raw scores; ``labels``: ``(N, C)`` in {0, 1}.
    Only where the class is present does the map hold a peak worth aligning.
    """
    back = apply_views(cam_of_view.float(), views, inverse=True)
    log_p = F.log_softmax(cam.float().flatten(2), dim=-1)
    log_q = F.log_softmax(back.flatten(2), dim=-1)
    kl_pq = (log_p.exp() * (log_p - log_q)).sum(-1)
    kl_qp = (log_q.exp() * (log_q - log_p)).sum(-1)
    present = labels.float()
    return (0.5 * (kl_pq + kl_qp) * present).sum() / present.sum().clamp(min=1.0)
