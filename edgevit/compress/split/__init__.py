"""ED-ViT: split a classifier into class-wise sub-models, one per edge device, and fuse their answers.

What the paper does ("ED-ViT: Splitting Vision Transformer for Distributed Inference on Edge Devices", Liu et
al., 2024), in four steps:
1. Splitting: the classes are divided into N subsets, one per device, and each subset gets its own sub-model
   derived from the full ViT; a sub-model only has to recognise its own classes.
2. Class-wise pruning: each sub-model is pruned (attention heads, MLP channels and embedding width) by how much
   each part matters for its classes, then retrained/distilled on them; the paper reports models up to 28.9x
   smaller in total at test accuracy close to the original.
3. Assignment: sub-models are placed on devices greedily under each device's memory (and compute) budget,
   to keep the slowest device fast.
4. Fusion: every device runs on the same image; their outputs are gathered and combined into one prediction
   over all classes (the paper trains a small MLP on the concatenated outputs).

What this package does, and where it differs:
- `submodel.partition_classes`: contiguous, near-equal class subsets.
- `submodel`: each sub-model is the full model pruned by `edgevit.compress.prune.prune_module` with a class-wise
  loss (a Taylor score on the KL of the full model's probabilities collapsed to "its classes + other"), given a
  head for its classes plus "other", and distilled from the full model on those collapsed probabilities. Heads
  and MLP channels are pruned; the embedding width is not (the prune API keeps the residual stream whole).
- `devices.assign`: one sub-model per device, matched by float32 weight size against `memory_mb`.
- `fusion`: a product of experts over the "other" scores instead of a trained MLP, so the prediction survives
  a missing device (its classes simply go unscored, flagged partial).
- `server` / `client`: each device serves its bundle over gRPC (`edgevit serve`); the client fans a frame out
  under one deadline and fuses whatever came back.
"""

from edgevit.compress.split.client import SplitClient
from edgevit.compress.split.devices import Device, assign, read_devices
from edgevit.compress.split.fusion import SPEC_FILE, DeviceEntry, FusionSpec, Prediction, check_bundle, fuse
from edgevit.compress.split.split import Split, SplitSettings, split_classifier
from edgevit.compress.split.submodel import DistillSettings, partition_classes

__all__ = [
    "SPEC_FILE",
    "Device",
    "DeviceEntry",
    "DistillSettings",
    "FusionSpec",
    "Prediction",
    "Split",
    "SplitClient",
    "SplitSettings",
    "assign",
    "check_bundle",
    "fuse",
    "partition_classes",
    "read_devices",
    "split_classifier",
]
