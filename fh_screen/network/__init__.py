"""The formation-enthalpy network: architecture specs, training and safe checkpoints."""

from fh_screen.network.mlp import PRESETS, NetworkSpec, build_network, parse_architecture

__all__ = ["PRESETS", "NetworkSpec", "build_network", "parse_architecture"]
