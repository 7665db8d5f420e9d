"""Contrastive losses for multilingual audio-text training (shared spec metrics.md).

Every function takes L2-normalised embeddings and a temperature `tau` (a tensor, used as
a divisor: logits = similarity / tau) and returns a scalar tensor. None normalises or
clamps: the model does that, so that each loss stays the formula in its docstring.

Sources: ML-CLAP (Yan et al., 2024, arXiv 2406.07012); ATRI (Yin et al., 2025);
1-to-K contrastive learning (Nie et al., KDD 2024, arXiv 2406.18254, code BUAADreamer/CCRK).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mlclap_loss(audio: Tensor, text: Tensor, tau: Tensor) -> Tensor:
    """Symmetric InfoNCE (ML-CLAP; ATRI Sec. 3.1, Eq. 4-5). audio (B, D), text (B, D).

    L = 1/2 [ CE(S/tau, I) + CE(S^T/tau, I) ],  S_ij = a_i . t_j
    """
    logits = audio @ text.T / tau  # (B, B)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def mlclap_mixture_loss(audio: Tensor, text: Tensor, tau: Tensor, clip_ids: Tensor) -> Tensor:
    """Symmetric InfoNCE for ML-CLAP's "mixture LE" batches, where one clip can appear in
    several rows (its English caption and a translation). audio (B, D), text (B, D),
    clip_ids (B,) integer ids.

    As mlclap_loss, except that a pair (i, j), i != j, of rows of the same clip is not a
    negative: S_ij/tau is set to -inf in both directions before the cross-entropy.
    """
    logits = audio @ text.T / tau  # (B, B)
    same_clip = clip_ids[:, None] == clip_ids[None, :]  # (B, B)
    same_clip.fill_diagonal_(False)
    logits = logits.masked_fill(same_clip, float("-inf"))
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def cacl_loss(audio: Tensor, english: Tensor, other: Tensor, tau: Tensor) -> Tensor:
    """Audio-English co-anchor contrastive loss (ATRI Sec. 4.2, Eq. 12-13).
    audio (B, D), english (B, D) clip i's English caption, other (B, D) its caption in a
    non-English language drawn per clip. Lc is the symmetric InfoNCE (mlclap_loss):

    L_CACL = Lc(a, e) + Lc(a, m) + Lc(e, m)      (equal weights: our choice, metrics.md)
    """
    return (
        mlclap_loss(audio, english, tau)
        + mlclap_loss(audio, other, tau)
        + mlclap_loss(english, other, tau)
    )


def duplicate_caption_mask(text_ids: Tensor, present: Tensor) -> Tensor:
    """(B, B*K) bool: column j*K + l (caption t_j^l) is the same text as one of clip i's
    present captions, j != i. text_ids (B, K) int, equal for equal strings; present (B, K).

    Such a caption describes clip i as well as clip j (two recordings of one concept often
    share a caption string), so it is no negative for a_i, and a_j is none for it.
    """
    batch, k = text_ids.shape
    ids = text_ids.masked_fill(~present, -1)  # (B, K)
    flat = ids.reshape(batch * k)  # (B*K,)
    same = (ids[:, :, None] == flat[None, None, :]) & (ids[:, :, None] >= 0)  # (B, K, B*K)
    owner = torch.arange(batch, device=ids.device).repeat_interleave(k)  # (B*K,) column's clip
    return same.any(1) & (owner[None, :] != torch.arange(batch, device=ids.device)[:, None])


def _kcl_terms(
    audio: Tensor, text: Tensor, tau: Tensor, present: Tensor | None,
    text_ids: Tensor | None = None, multi_positive: bool = False,
) -> tuple[Tensor, Tensor]:
    """The two directions (L_a2t, L_t2a) of the 1-to-K loss; see kcl_loss."""
    batch, k, dim = text.shape
    if present is None:
        present = torch.ones(batch, k, dtype=torch.bool, device=text.device)
    n_present = present.sum()
    if n_present == 0:
        raise ValueError("kcl loss: no caption present in the batch")
    # Zero absent slots so that whatever they hold (NaN padding) never reaches a gradient.
    text = text.masked_fill(~present[..., None], 0.0)  # (B, K, D)
    flat_text = text.reshape(batch * k, dim)  # (B*K, D)
    flat_present = present.reshape(batch * k)  # (B*K,)
    rows = torch.arange(batch, device=text.device)

    logits = audio @ flat_text.T / tau  # (B, B*K), column j*K + l is t_j^l
    logits = logits.masked_fill(~flat_present[None, :], float("-inf"))
    same = duplicate_caption_mask(text_ids, present) if text_ids is not None else None
    if same is not None and not multi_positive:
        # one mask serves both directions: logits[j, i*K + k] is masked exactly when t_i^k
        # is one of a_j's captions (j != i), which is when a_j is no t2a negative of t_i^k
        logits = logits.masked_fill(same, float("-inf"))
    log_norm = torch.logsumexp(logits, dim=1)  # (B,)
    positives = logits.reshape(batch, batch, k)[rows, rows]  # (B, K): s(a_i, t_i^k)/tau
    a2t = torch.where(present, log_norm[:, None] - positives, 0.0)  # (B, K)

    t2a_logits = logits.T.reshape(batch, k, batch)  # (B, K, B): [i, k, j] = s(t_i^k, a_j)/tau
    t2a_log_norm = torch.logsumexp(
        torch.where(present[..., None], t2a_logits, 0.0), dim=2
    )  # (B, K); absent rows are replaced by zeros (finite) and dropped below
    t2a = torch.where(present, t2a_log_norm - torch.where(present, positives, 0.0), 0.0)
    if same is not None and multi_positive:
        a2t, t2a = _multi_positive_terms(logits, log_norm, t2a_log_norm, present, same)

    loss_a2t = k * a2t.sum() / n_present
    loss_t2a = t2a.sum() / n_present
    return loss_a2t, loss_t2a


def _multi_positive_terms(logits: Tensor, log_norm: Tensor, t2a_log_norm: Tensor,
                          present: Tensor, same: Tensor) -> tuple[Tensor, Tensor]:
    """(B, K) a2t and t2a terms when the pairs `same` (B, B*K) names are positives:
    each anchor's -log p averaged over its positives (SupCon's L_out), so a clip keeps
    the weight of its present captions and a caption the weight of one term."""
    batch, k = present.shape
    own = torch.eye(batch, dtype=torch.bool, device=logits.device).repeat_interleave(k, dim=1)
    positive = (own & present.reshape(1, batch * k)) | same  # (B, B*K)
    finite = torch.where(positive, logits, 0.0)  # -inf of absent slots never subtracted
    a2t_nll = torch.where(positive, log_norm[:, None] - finite, 0.0).sum(1)  # (B,)
    a2t_mean = a2t_nll / positive.sum(1).clamp(min=1)  # (B,)
    a2t = torch.where(present, a2t_mean[:, None], 0.0)  # (B, K): n_present_i terms of it
    t2a_nll = torch.where(positive, t2a_log_norm.reshape(1, batch * k) - finite, 0.0).sum(0)
    t2a_mean = t2a_nll / positive.sum(0).clamp(min=1)  # (B*K,)
    return a2t, torch.where(present, t2a_mean.reshape(batch, k), 0.0)


def kcl_loss(audio: Tensor, text: Tensor, tau: Tensor, present: Tensor | None = None,
             text_ids: Tensor | None = None, multi_positive: bool = False) -> Tensor:
    """1-to-K contrastive loss (ATRI Sec. 4.1; exact form from the CCRK code).
    audio (B, D); text (B, K, D), text[i, k] = t_i^k; present (B, K) bool, None = all.

    Logits are B x (B*K); a clip's other K-1 captions stay in its a2t denominator:

        L_a2t = -(1/B)    sum_i sum_k log[exp(s(a_i,t_i^k)/tau) / sum_j sum_l exp(s(a_i,t_j^l)/tau)]
        L_t2a = -(1/(BK)) sum_i sum_k log[exp(s(t_i^k,a_i)/tau) / sum_j exp(s(t_i^k,a_j)/tau)]
        L_KCL = (L_a2t + L_t2a) / (2K)

    Absent slots (our choice where the papers are silent): an absent t_j^l leaves every
    a2t denominator and contributes no term. With n present slots, the two averages are
    taken over them, L_a2t = (K/n) sum_present(...) and L_t2a = (1/n) sum_present(...),
    with K = text.shape[1] fixed; with every slot present n = BK and this is the formula
    above. So L_a2t / K and L_t2a are always means over the present (clip, language)
    pairs, and the 1/K weighting of t2a is kept. Every audio stays a t2a negative.

    Duplicate captions (our option, `--mask-duplicate-captions`): with `text_ids` (B, K),
    equal for equal strings, a caption of clip j that is also one of clip i's leaves a_i's
    a2t denominator, and a_j leaves that caption's t2a denominator (i != j), as ML-CLAP's
    mixture loss does for rows of one clip: such pairs are no negatives.

    Multiple positives (our option, `--multi-positive`): with `text_ids`, those pairs are
    positives instead. Each of a_i's present captions contributes the mean of
    -log p(t | a_i) over a_i's positives (its own present captions and the others'
    captions equal to one of them), and each caption -log p(a | t) averaged over its
    clip and the clips it also describes (SupCon's L_out form, Khosla et al. 2020); the
    denominators keep every caption and audio. With no shared id it is the plain loss.
    """
    loss_a2t, loss_t2a = _kcl_terms(audio, text, tau, present, text_ids, multi_positive)
    k = text.shape[1]
    return (loss_a2t + loss_t2a) / (2 * k)


def kcl_balanced_loss(
    audio: Tensor, text: Tensor, tau: Tensor, present: Tensor | None = None,
    text_ids: Tensor | None = None, multi_positive: bool = False,
) -> Tensor:
    """1-to-K loss with both directions averaged (our variant, metrics.md):
    L = (L_a2t / K + L_t2a) / 2, with L_a2t, L_t2a, shapes and absent slots as in
    kcl_loss, so that a study can separate 1-to-K batches from KCL's 1/K t2a weighting.
    `text_ids`, `multi_positive`: as in kcl_loss.
    """
    loss_a2t, loss_t2a = _kcl_terms(audio, text, tau, present, text_ids, multi_positive)
    k = text.shape[1]
    return (loss_a2t / k + loss_t2a) / 2

