"""Experiment, not product code: the recording's features (recording_token.py) go straight to the
logits through a linear layer of their own (after a layer norm without parameters), beside the
transformer over the frame tokens, which no longer sees them.

`python docs/experiments/recording_features/wide_head.py train|evaluate ...` is `rfcls` so changed.
"""

from __future__ import annotations

import sys

import torch.nn.functional as F
from recording_token import patch_features
from torch import nn

import rfmodel.classifier

transformer_init = rfmodel.classifier.RFClassifier.__init__
transformer_forward = rfmodel.classifier.RFClassifier.forward


def init(self, cfg) -> None:
    transformer_init(self, cfg)
    self.global_head = nn.Linear(cfg.n_features, cfg.n_classes)


def forward(self, x, mask=None):
    """x [B, T + 1, F]: frame tokens, then the recording's features (no padding here)."""
    frames, recording = x[:, :-1], x[:, -1]
    normed = F.layer_norm(recording, recording.shape[-1:])
    return transformer_forward(self, frames, None) + self.global_head(normed)


if __name__ == "__main__":
    from service.cli import main

    patch_features()
    rfmodel.classifier.RFClassifier.__init__ = init
    rfmodel.classifier.RFClassifier.forward = forward
    sys.exit(main(sys.argv[1:]))
