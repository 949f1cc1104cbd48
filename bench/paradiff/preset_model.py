"""The paradiff benches' model: a preset (optionally with the other attention), loaded from the
cache or trained as the CLI trains it (on the preset's training threads), then sampled on this
machine's threads."""

from __future__ import annotations

from paperlab.paradiff.config import ParadiffConfig, get_preset
from paperlab.paradiff.train import Trained, ensure_model
from paperlab.threads import set_threads


def preset_model(preset: str, attention: str | None = None) -> tuple[ParadiffConfig, Trained]:
    cfg = get_preset(preset)
    if attention:
        cfg = cfg.with_overrides(**{"model.attention": attention})
    set_threads(cfg.train.threads)  # a model not yet cached trains on one thread, as the CLI trains it
    trained = ensure_model(cfg)
    set_threads()
    return cfg, trained
