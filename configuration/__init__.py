"""Configurations of the medmae model families (imports nothing else of medmae)."""

from .configuration_etmae import ETMAE_PRESETS, ETMAEConfig
from .configuration_sdda_mae import SDDA_MAE_PRESETS, SDDAMAEConfig

__all__ = ["ETMAEConfig", "ETMAE_PRESETS", "SDDAMAEConfig", "SDDA_MAE_PRESETS"]
