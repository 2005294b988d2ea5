"""One packed step's mathematics: every job's loss and its prefix's gradient from shared forwards.

All jobs' rows, sorted by length, go through the frozen LM in forwards of ``rows_per_forward``
rows, each row with its own job's prefix (``stack_prefixes``); each job's loss is normalised by
its own target count, so the gradient each prefix gets is that of its own loss alone (tested
against separate runs). Plain torch: no Lightning, no Hydra; mixed precision is the caller's
(the pack's Trainer runs the step under its precision plugin's autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefixlab.engine.padding import pad_rows
from prefixlab.methods import get_method


def _length_sorted_forwards(batches: list[dict], pad_id: int, rows_per_forward: int | None) -> list[tuple]:
    """All jobs' rows, sorted by length and cut into forwards of ``rows_per_forward`` rows (None:
    one forward), each left-padded to its own longest row: [(job of each row, ids, mask, labels)].

    A job's batch is padded to its longest row whatever the order; K jobs' rows concatenated
    and padded to the longest of all would cost more than the K batches alone. Sorted, neighbours
    have nearly equal lengths, so forwards of a job's batch size carry less padding than the jobs'
    own batches (``bench/padding.py`` measures both; README, Benchmarks). Rows are
    independent in a transformer and each job's loss sums over its own rows, so the order and
    grouping change only the float order. The batches are left-padded (real tokens last)."""
    rows = []
    for job, batch in enumerate(batches):
        for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            real = mask.bool()
            rows.append((job, ids[real], labels[real]))
    rows.sort(key=lambda row: len(row[1]))  # stable: equal lengths keep the jobs' order
    size = rows_per_forward or len(rows)
    forwards = []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        ids, mask = pad_rows([row[1] for row in chunk], pad_id, left=True)
        labels, _ = pad_rows([row[2] for row in chunk], -100, left=True)
        forwards.append((torch.tensor([row[0] for row in chunk]), ids, mask, labels))
    return forwards


def _token_losses(shared, input_ids, attention_mask, labels, prefix) -> torch.Tensor:
    """Cross-entropy of every next-token target, [rows, columns] (0 where there is none). As in ``PrefixedCausalLM.target_loss``, only the columns that hold targets go
    through the LM head (targets are the last columns of a left-padded batch)."""
    supervised = (labels != -100).any(dim=0).nonzero()
    first = int(supervised[0]) if len(supervised) else labels.shape[1] - 1
    keep = min(labels.shape[1] - first + 1, labels.shape[1])
    logits = shared(input_ids, attention_mask, prefix=prefix, logits_to_keep=keep).logits[:, :-1].float()
    targets = labels[:, labels.shape[1] - keep + 1 :]
    # one row of logits per token, as target_loss computes it: F.cross_entropy over a [rows, vocab,
    # columns] view (logits.transpose(1, 2)) took a less exact path on the CPU: with SmolLM2's
    # 49k vocabulary its token losses were up to 2.2e-4 off, the mean 1.2e-4 (the float64 mean's
    # error was 8e-6 this way), enough for the packed runs to drift from separate ones
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none")
    return losses.view(targets.shape)


def _gradient_leaves(activations):
    """Detached copies of a job's prefix keys/values that collect the gradient of every forward
    of the step; the job's encoder gets it in one backward at the end (``_backward_into_encoder``)."""
    from prefixlab.engine.injection import PrefixActivations, SitePrefix

    return PrefixActivations({name: SitePrefix(p.keys.detach().requires_grad_(), p.values.detach().requires_grad_(),
                                               p.mask, p.visible_from) for name, p in activations.sites.items()})


def _backward_into_encoder(activations, leaves) -> None:
    """The gradient the leaves collected, on through the encoder (its MLP) to its parameters."""
    pairs = [(getattr(activations.sites[name], part), getattr(leaf, part).grad)
             for name, leaf in leaves.sites.items() for part in ("keys", "values")]
    pairs = [(tensor, grad) for tensor, grad in pairs if grad is not None and tensor.requires_grad]
    if pairs:
        torch.autograd.backward([tensor for tensor, _ in pairs], [grad for _, grad in pairs])


def forward_backward(running: list, batches: list[dict], shared, pad_id: int, device,
                     rows_per_forward: int | None = None) -> list:
    """Every job's loss and its prefix's gradient, from forwards over all jobs' rows
    (``_length_sorted_forwards``; each row with its own job's prefix) with a backward after
    each. Returns [(job, loss)] for the jobs whose loss is finite; the others get ``error``, as
    the single run's training_step raises, and their rows send nothing into any backward.

    A job's loss is its mean target loss over all its rows (``target_loss`` of its batch): each
    forward adds its rows' summed token losses divided by the job's target count of the whole
    batch. The step minimizes the sum of the jobs' losses; a prefix reaches only its own rows,
    so d(sum)/d(prefix_j) = d(loss_j)/d(prefix_j). The prefix is computed once per job (its MLP
    runs once) and its gradient flows back through the encoder once, after the last forward."""
    from prefixlab.engine.mixing import stack_prefixes, with_visibility

    forwards = _length_sorted_forwards(batches, pad_id, rows_per_forward)
    target_counts = [0] * len(running)
    for jobs, _, _, labels in forwards:
        for job, count in zip(jobs.tolist(), (labels[:, 1:] != -100).sum(dim=1).tolist()):
            target_counts[job] += count
    infix = [get_method(r.job.settings.method.name).target_only for r in running]
    activations = [r.encoder() for r in running]
    leaves = [_gradient_leaves(a) for a in activations]
    losses: list[torch.Tensor | float] = [0.0] * len(running)
    failed: set[int] = set()
    for jobs, input_ids, attention_mask, labels in forwards:
        input_ids, attention_mask, labels = input_ids.to(device), attention_mask.to(device), labels.to(device)
        prefix = stack_prefixes([leaves[job] for job in jobs.tolist()])
        infix_rows = torch.tensor([infix[job] for job in jobs.tolist()], device=device)
        if infix_rows.any():  # an infix row sees its prefix from its last prompt token on
            first_target = (labels != -100).long().argmax(dim=1)
            prefix = with_visibility(prefix, torch.where(infix_rows, first_target - 1, 0))
        token_loss = _token_losses(shared, input_ids, attention_mask, labels, prefix)
        jobs = jobs.to(device)
        terms = []
        for job in sorted(set(jobs.tolist())):
            term = token_loss[jobs == job].sum() / target_counts[job]
            losses[job] = losses[job] + term.detach()
            if not torch.isfinite(term):
                failed.add(job)
            elif job not in failed:
                terms.append(term)
        if terms:
            torch.stack(terms).sum().backward()
    finite = []
    for job, r in enumerate(running):
        if job in failed:
            r.error = FloatingPointError(f"loss is {float(losses[job])} at step {r.step}; lower optim.lr")
        else:
            _backward_into_encoder(activations[job], leaves[job])
            finite.append((r, losses[job]))
    return finite
