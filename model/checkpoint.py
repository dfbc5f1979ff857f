"""Checkpoints: a folder transformers loads unchanged, plus what exact resume needs.

``OUT/checkpoint-STEP/`` holds ``save_pretrained`` output of the model and the processor,
``training_config.json`` (the full training configuration) and ``trainer_state.pt`` (optimizer,
scheduler, step, next batch of the data stream, RNG states). ``OUT/latest`` names the newest one.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

CONFIG_NAME = "training_config.json"
STATE_NAME = "trainer_state.pt"
LATEST = "latest"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, step: int, model, processor, config, trainer_state: dict, keep: int) -> Path:
    """Write ``checkpoint-STEP`` atomically (temp folder, then rename) and point ``latest`` at it."""
    final = out / f"checkpoint-{step}"
    tmp = out / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / CONFIG_NAME).write_text(json.dumps(asdict(config), indent=2, sort_keys=True))
    torch.save({**trainer_state, "rng": rng_state()}, tmp / STATE_NAME)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (out / LATEST).write_text(final.name)
    _prune(out, keep)
    return final


def _prune(out: Path, keep: int) -> None:
    """Keep the ``keep`` newest checkpoints (0 keeps all)."""
    if keep <= 0:
        return
    found = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder: the folder itself, or the newest one of a training output folder."""
    path = Path(path)
    if (path / "config.json").exists():
        return path
    if (path / LATEST).exists():
        name = (path / LATEST).read_text().strip()
        if not (path / name / "config.json").exists():
            raise FileNotFoundError(
                f"{path / LATEST} names {name!r}, which is not a checkpoint folder under {path}; "
                "write the name of an existing checkpoint-STEP folder into it"
            )
        return path / name
    raise FileNotFoundError(
        f"{path} is neither a checkpoint (no config.json) nor a training output folder (no '{LATEST}' file)"
    )


def load_training_config(checkpoint: Path) -> dict:
    """The saved training configuration as a dict ({} for a checkpoint not written by `grit train`)."""
    path = checkpoint / CONFIG_NAME
    return json.loads(path.read_text()) if path.exists() else {}


def load_trainer_state(checkpoint: Path) -> dict:
    """The optimizer/scheduler/stream/RNG state; ValueError (one line) when it is missing or truncated."""
    path = checkpoint / STATE_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: {checkpoint} cannot be resumed (it holds no trainer state)"
        )
    try:
        # weights_only=False: the state holds Python RNG tuples and numpy arrays we wrote ourselves.
        return torch.load(path, map_location="cpu", weights_only=False)
    except (
        Exception
    ) as err:  # torch raises RuntimeError, EOFError or UnpicklingError depending on where it ends
        raise ValueError(
            f"{path} is truncated or corrupt ({type(err).__name__}); resume from an earlier checkpoint by "
            f"writing its folder name into {checkpoint.parent / LATEST}"
        ) from err
