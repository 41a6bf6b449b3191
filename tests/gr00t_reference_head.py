"""PyTorch reference of GR00T N1.5's flow-matching action head (lerobot 0.4.4's copy) for parity tests.

Builds on ``tests/gr00t_reference.py`` (offline lerobot import, ``randomize_``). Public helpers:
  action_head_cfg_dict(cfg)              -> config.json-style ``action_head_cfg`` for an ActionHeadConfig
  build_reference_head(cfg, seed)        -> lerobot FlowmatchingActionHead, random fp32 weights, eval mode
  head_params_from_torch(head, cfg)      -> the Flax params of the same weights (through the converter's rules)
  reference_velocity(head, ...)          -> one step of the reference get_action loop (the predicted velocity)
  reference_get_action(head, ..., noise) -> reference get_action with the initial noise injected
  reference_loss(head, ..., noise, t)    -> reference training loss with noise and t injected
"""

from __future__ import annotations

import contextlib
import io
from typing import Any
from unittest import mock

import numpy as np
import torch

from gr00t_port.action_head import FlowmatchingActionHead, action_head_key_rules
from gr00t_port.config import ActionHeadConfig
from gr00t_port.convert import assemble_params, expected_torch_shapes, flat_shapes
from gr00t_reference import lerobot_groot, randomize_, torch_to_numpy


def action_head_cfg_dict(cfg: ActionHeadConfig) -> dict[str, Any]:
    """The ``action_head_cfg`` a GR00T checkpoint's config.json would carry for ``cfg`` (shared with the bench)."""
    from gr00t_port.reference_torch import action_head_config
    return action_head_config(cfg)


def _head_module():
    lerobot_groot()  # registers the lerobot namespace packages
    from lerobot.policies.groot.action_head import flow_matching_action_head

    return flow_matching_action_head


def build_reference_head(cfg: ActionHeadConfig, seed: int = 0, device: str | None = None):
    """lerobot's ``FlowmatchingActionHead`` for ``cfg`` with random fp32 weights, in eval mode (no dropout).

    device="meta" builds it without allocating (for shape checks of the full-size head)."""
    fm = _head_module()
    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints parameter counts and tune flags
        if device == "meta":
            # torch.distributions validates its arguments with .item(), which meta tensors refuse.
            with torch.device("meta"), mock.patch.object(fm, "Beta", lambda *a, **k: None):
                return fm.FlowmatchingActionHead(fm.FlowmatchingActionHeadConfig(**action_head_cfg_dict(cfg)))
        head = fm.FlowmatchingActionHead(fm.FlowmatchingActionHeadConfig(**action_head_cfg_dict(cfg)))
    return randomize_(head, seed).eval()


def head_params_from_torch(head, cfg: ActionHeadConfig) -> dict:
    """The Flax params holding ``head``'s weights, through ``action_head_key_rules`` (checked for coverage)."""
    rules = action_head_key_rules(cfg, torch_prefix="", flax_prefix=())
    target = flat_shapes(FlowmatchingActionHead(cfg).param_shapes())
    expected = expected_torch_shapes(rules, target)
    state = {k: torch_to_numpy(v) for k, v in head.state_dict().items()}
    if set(state) != set(expected):
        raise AssertionError(f"torch keys != rule keys: {sorted(set(state) ^ set(expected))[:5]}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise AssertionError(f"{key}: torch {tuple(state[key].shape)}, rules expect {shape}")
    return assemble_params(rules, target, state.__getitem__, log=lambda _: None)


def _batch(vl_tokens, state, embodiment_id):
    from transformers.feature_extraction_utils import BatchFeature

    backbone = BatchFeature(data={"backbone_features": torch.from_numpy(np.asarray(vl_tokens, np.float32)),
                                  "backbone_attention_mask": torch.ones(np.shape(vl_tokens)[:2], dtype=torch.int64)})
    action = BatchFeature(data={"state": torch.from_numpy(np.asarray(state, np.float32)),
                                "embodiment_id": torch.from_numpy(np.asarray(embodiment_id, np.int64))})
    return backbone, action


@torch.no_grad()
def reference_velocity(head, vl_tokens, state, embodiment_id, x_t, t_bucket) -> np.ndarray:
    """The body of the reference ``get_action`` loop at (x_t, t_bucket): vlln + VLSA + state encoder, action
    encoder + position embedding, DiT, action decoder, last ``horizon`` tokens. Returns (B, horizon, action_dim)."""
    backbone, action = _batch(vl_tokens, state, embodiment_id)
    backbone = head.process_backbone_output(backbone)
    vl = backbone["backbone_features"]
    emb = action["embodiment_id"]
    state_features = head.state_encoder(action["state"], emb)
    x = torch.from_numpy(np.asarray(x_t, np.float32))
    ts = torch.from_numpy(np.asarray(t_bucket, np.int64))
    a = head.action_encoder(x, ts, emb)
    if head.config.add_pos_embed:
        a = a + head.position_embedding(torch.arange(a.shape[1])).unsqueeze(0)
    future = head.future_tokens.weight.unsqueeze(0).expand(vl.shape[0], -1, -1)
    out = head.model(hidden_states=torch.cat((state_features, future, a), dim=1), encoder_hidden_states=vl,
                     timestep=ts)
    return head.action_decoder(out, emb)[:, -x.shape[1]:].numpy()


def reference_get_action(head, vl_tokens, state, embodiment_id, noise, denoising_steps: int | None = None
                         ) -> np.ndarray:
    """The reference ``get_action`` with its initial ``torch.randn`` replaced by ``noise`` (B, horizon, dim)."""
    backbone, action = _batch(vl_tokens, state, embodiment_id)
    fixed = torch.from_numpy(np.asarray(noise, np.float32))
    if denoising_steps is not None:
        head.num_inference_timesteps = denoising_steps
    fm = _head_module()
    with mock.patch.object(fm.torch, "randn", lambda *a, **k: fixed.clone()):
        return head.get_action(backbone, action)["action_pred"].numpy()


def reference_loss(head, vl_tokens, state, embodiment_id, actions, action_mask, noise, t) -> float:
    """The reference training loss (``forward``) with its noise draw and Beta time sample replaced."""
    backbone, action = _batch(vl_tokens, state, embodiment_id)
    action["action"] = torch.from_numpy(np.asarray(actions, np.float32))
    action["action_mask"] = torch.from_numpy(np.asarray(action_mask, np.float32))
    fixed_noise = torch.from_numpy(np.asarray(noise, np.float32))
    fixed_t = torch.from_numpy(np.asarray(t, np.float32))
    fm = _head_module()
    with torch.no_grad(), mock.patch.object(fm.torch, "randn", lambda *a, **k: fixed_noise.clone()), \
            mock.patch.object(head, "sample_time", lambda *a, **k: fixed_t.clone()):
        return float(head(backbone, action)["loss"])
