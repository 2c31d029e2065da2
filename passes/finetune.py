"""Recovery fine-tuning with distillation from the original model (PyTorch input only).

After narrowing (and recalibration) the rewritten module is trained for a few hundred steps to
match the original model's outputs on the user's data: KL divergence between the softened logits
(temperature ``T``, scaled by ``T^2``), plus cross-entropy when labels are given. Batch norms stay in
eval mode (their statistics were just recalibrated and small batches would only add noise), so
only weights move. Deterministic under a seed: fixed batch order, one thread, seeded generator.

Runs before the precision pass (an int8 module cannot be trained), after recalibration.
"""
from __future__ import annotations

import numpy as np

from edgepass.calibration import calibration_tensors
from edgepass.errors import InputError

from .base import RewritePass


def split_finetune_data(data):
    """``(inputs, labels)`` from the forms users pass: inputs only, an ``(x, y)`` pair, or a dict
    with ``x``/``y`` (or ``inputs``/``labels``); arrays or tensors."""
    labels = None
    if isinstance(data, dict) and any(k in data for k in ("x", "inputs")):
        x = data.get("x", data.get("inputs"))
        labels = data.get("y", data.get("labels"))
    elif isinstance(data, (tuple, list)) and len(data) == 2 and np.ndim(data[1]) == 1 and np.ndim(data[0]) > 1:
        x, labels = data
    else:
        x = data
    if labels is not None:
        labels = np.asarray(labels.numpy() if hasattr(labels, "numpy") else labels).astype(np.int64)
    return x, labels


class FinetunePassFX(RewritePass):
    name = "finetune"

    def __init__(self, teacher, data, *, steps: int = 200, lr: float = 1e-3, batch_size: int = 32,
                 temperature: float = 4.0, seed: int = 0, example_inputs=None, progress: bool = True):
        if steps < 0:
            raise InputError("finetune_steps must be >= 0")
        self.teacher, self.data, self.steps, self.lr = teacher, data, int(steps), lr
        self.batch_size, self.temperature, self.seed = batch_size, temperature, seed
        self.example_inputs, self.progress = example_inputs, progress

    def call(self, gm):
        import torch
        import torch.nn.functional as F

        if self.data is None or self.steps == 0:
            return self.result(gm, [])
        x, labels = split_finetune_data(self.data)
        batches = calibration_tensors(x, gm, self.example_inputs, batch_size=1, what="fine-tuning")
        inputs = [torch.cat([b[i] for b in batches]) for i in range(len(batches[0]))]
        n = inputs[0].shape[0]
        if labels is not None and len(labels) != n:
            raise InputError(f"fine-tuning data: {n} inputs but {len(labels)} labels")
        y = torch.from_numpy(labels) if labels is not None else None
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            with torch.no_grad():
                self.teacher.eval()
                teacher_logits = torch.cat([self.teacher(*[t[i:i + 256] for t in inputs]) for i in range(0, n, 256)])
            params = [p for p in gm.parameters() if p.requires_grad]
            opt = torch.optim.Adam(params, lr=self.lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, self.steps))
            gm.eval()  # batch norms keep their (recalibrated) statistics
            T = self.temperature
            it = range(self.steps)
            if self.progress:
                from tqdm import tqdm

                it = tqdm(it, desc="fine-tuning (distillation)", unit="step", leave=False)
            order = torch.randperm(n, generator=gen)
            pos, loss_value = 0, float("nan")
            for _ in it:
                if pos + self.batch_size > n:
                    order, pos = torch.randperm(n, generator=gen), 0
                idx = order[pos:pos + self.batch_size]
                pos += self.batch_size
                out = gm(*[t[idx] for t in inputs])
                loss = F.kl_div(F.log_softmax(out / T, 1), F.softmax(teacher_logits[idx] / T, 1),
                                reduction="batchmean") * T * T
                if y is not None:
                    loss = loss + F.cross_entropy(out, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                loss_value = loss.item()
        finally:
            torch.set_num_threads(threads)
        gm.eval()
        for p in gm.parameters():
            p.grad = None
        return self.result(gm, [f"{self.steps} distillation steps on {n} samples"
                                f"{' with labels' if y is not None else ''} (final loss {loss_value:.4f})"])
