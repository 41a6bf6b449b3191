"""A checkpoint of ours that never was a torch checkpoint (SFT or RL output: params + assets with only a
`gr00t_config`) survives `--reverse` and the forward conversion bit-exactly, with config.json and eagle_config.json
derived from its GR00TConfig."""

import jax
import numpy as np
import orbax.checkpoint as ocp

from gr00t_port.config import GR00TConfig
from gr00t_port.convert import convert, export, load_converted
from test_gr00t_policy import TAG, _metadata_entry, _model_config, _random_params


def test_our_checkpoint_round_trips_through_torch_layout(tmp_path):
    cfg = _model_config()
    options = ocp.CheckpointManagerOptions(step_prefix="global_step", create=True, enable_async_checkpointing=False)
    mngr = ocp.CheckpointManager((tmp_path / "ours").absolute(), options=options, item_names=("params", "assets"))
    mngr.save(7, args=ocp.args.Composite(params=ocp.args.PyTreeSave(_random_params(11)), assets=ocp.args.JsonSave(
        {"gr00t_config": cfg.to_dict(), "metadata": {TAG: _metadata_entry()}})))
    mngr.wait_until_finished()
    mngr.close()

    export(tmp_path / "ours" / "global_step_7", tmp_path / "torch")
    assert (tmp_path / "torch" / "config.json").exists() and (tmp_path / "torch" / "eagle_config.json").exists()
    convert(tmp_path / "torch", tmp_path / "back")
    a, _, _ = load_converted(tmp_path / "ours" / "global_step_7")
    b, assets, _ = load_converted(tmp_path / "back" / "global_step_0")
    la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and np.array_equal(x, y), jax.tree_util.keystr(path)
    back = GR00TConfig.from_dict(assets["gr00t_config"])  # same model; remat is a numerics choice, not a size
    assert back.backbone.replace(remat_policy="none") == cfg.backbone
    assert back.action_head.replace(remat_policy="none") == cfg.action_head
