"""What a user sees while training: a tqdm progress bar and TensorBoard scalars (rank 0 only)."""

from __future__ import annotations

import math
from pathlib import Path


class Monitor:
    """Progress bar and TensorBoard writer; either may be off."""

    def __init__(
        self, out: Path, total_steps: int, initial_step: int, log_every: int, progress: bool, enabled: bool
    ):
        self._log_every = log_every
        self._writer = self._bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(out / "tensorboard"))
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_steps, initial=initial_step, desc="train", unit="step", dynamic_ncols=True
            )

    def step(self, step: int, loss: float, grad_norm: float, lr: float, samples: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar("train/loss", loss, step)
            self._writer.add_scalar("train/lr", lr, step)
            self._writer.add_scalar("train/grad_norm", grad_norm, step)
            self._writer.add_scalar("train/samples", samples, step)
        if self._bar is not None:
            self._bar.update(1)
            if step % self._log_every == 0:
                self._bar.set_postfix(
                    loss=f"{loss:.3f}", lr=f"{lr:.2e}", ppl=f"{math.exp(min(loss, 50)):.1f}"
                )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
