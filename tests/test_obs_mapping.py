"""obs_mapping: RLinf's model inputs (two camera images, 8-dim state, instructions) from a policy group."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest
import torch

from jaxrl_isaac.envs.obs_mapping import (STATE_DIM, eef_axis_angle_gripper_state, quat_to_axis_angle, to_model_inputs,
                                          to_xyzw)


def robosuite_quat2axisangle(quat_xyzw: np.ndarray) -> np.ndarray:
    """robosuite.utils.transform_utils.quat2axisangle (the function RLinf's torch version ports), row by row."""
    out = np.zeros((len(quat_xyzw), 3))
    for row, quat in enumerate(np.asarray(quat_xyzw, dtype=np.float64)):
        w = min(max(quat[3], -1.0), 1.0)
        den = math.sqrt(1.0 - w * w)
        if not math.isclose(den, 0.0):
            out[row] = quat[:3] * 2.0 * math.acos(w) / den
    return out


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula, (N, 3) -> (N, 3, 3)."""
    mats = []
    for vec in np.asarray(axis_angle, dtype=np.float64):
        angle = np.linalg.norm(vec)
        if angle < 1e-12:
            mats.append(np.eye(3))
            continue
        k = vec / angle
        kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        mats.append(np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx)
    return np.stack(mats)


def random_unit_quats(n: int, seed: int) -> np.ndarray:
    quats = np.random.default_rng(seed).normal(size=(n, 4))
    return quats / np.linalg.norm(quats, axis=1, keepdims=True)


class LazyPolicyGroup(Mapping):
    """A policy group that 'renders' camera terms when read and counts every read (like the embedded env)."""

    def __init__(self, terms: dict[str, torch.Tensor]):
        self._terms = terms
        self.reads: dict[str, int] = {key: 0 for key in terms}

    def __getitem__(self, key):
        value = self._terms[key]
        self.reads[key] += 1
        return value

    def __iter__(self):
        return iter(self._terms)

    def __len__(self):
        return len(self._terms)


def policy_group(n: int = 4, quat_order: str = "xyzw", seed: int = 0, device: str = "cpu") -> tuple[dict, np.ndarray]:
    quat_xyzw = random_unit_quats(n, seed)
    quat = quat_xyzw if quat_order == "xyzw" else quat_xyzw[:, [3, 0, 1, 2]]
    gen = torch.Generator().manual_seed(seed)
    terms = {
        "table_cam": torch.randint(0, 256, (n, 24, 32, 3), dtype=torch.uint8, generator=gen).to(device),
        "wrist_cam": torch.randint(0, 256, (n, 16, 16, 3), dtype=torch.uint8, generator=gen).to(device),
        "eef_pos": torch.rand(n, 3, generator=gen).to(device),
        "eef_quat": torch.tensor(quat, dtype=torch.float32, device=device),
        "gripper_pos": torch.rand(n, 2, generator=gen).to(device) * 0.04,
        "joint_pos": torch.rand(n, 9, generator=gen).to(device),
        "joint_vel": torch.rand(n, 9, generator=gen).to(device),
    }
    return terms, quat_xyzw


@pytest.mark.parametrize("quat_order", ["xyzw", "wxyz"])
def test_axis_angle_matches_robosuite_reference_for_random_quaternions(quat_order):
    quat_xyzw = random_unit_quats(512, seed=1)
    assert (quat_xyzw[:, 3] < 0).sum() > 100  # both hemispheres are exercised
    quat = quat_xyzw if quat_order == "xyzw" else quat_xyzw[:, [3, 0, 1, 2]]
    ours = quat_to_axis_angle(to_xyzw(torch.tensor(quat, dtype=torch.float32), quat_order)).double().numpy()
    np.testing.assert_allclose(ours, robosuite_quat2axisangle(quat_xyzw), atol=2e-5, rtol=0)


def test_q_and_minus_q_keep_robosuite_convention_and_the_same_rotation():
    quat_xyzw = random_unit_quats(64, seed=2)
    plus = quat_to_axis_angle(torch.tensor(quat_xyzw, dtype=torch.float32)).double().numpy()
    minus = quat_to_axis_angle(torch.tensor(-quat_xyzw, dtype=torch.float32)).double().numpy()
    # No hemisphere flip (as robosuite/RLinf): -q gives (theta - 2 pi) * axis, a different vector ...
    np.testing.assert_allclose(minus, robosuite_quat2axisangle(-quat_xyzw), atol=2e-5, rtol=0)
    assert np.abs(plus - minus).max() > 1.0
    norms = np.linalg.norm(plus, axis=1) + np.linalg.norm(minus, axis=1)
    np.testing.assert_allclose(norms, 2 * math.pi, atol=1e-4)
    # ... for the same rotation.
    np.testing.assert_allclose(axis_angle_to_matrix(plus), axis_angle_to_matrix(minus), atol=1e-5)


def test_axis_angle_is_accurate_near_zero_angle_in_float32():
    axis = np.array([0.6, -0.0, 0.8])
    for angle in (1e-2, 1e-4, 1e-6, 1e-8):
        quat = np.concatenate([axis * math.sin(angle / 2), [math.cos(angle / 2)]])[None]
        ours = quat_to_axis_angle(torch.tensor(quat, dtype=torch.float32)).double().numpy()[0]
        np.testing.assert_allclose(ours, angle * axis, rtol=1e-5, atol=0)
    for identity in ([0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, -1.0]):
        out = quat_to_axis_angle(torch.tensor([identity]))
        assert torch.equal(out, torch.zeros(1, 3)), (identity, out)


def test_axis_angle_ignores_quaternion_norm():
    quat = torch.tensor(random_unit_quats(16, seed=3), dtype=torch.float32)
    torch.testing.assert_close(quat_to_axis_angle(quat * 3.0), quat_to_axis_angle(quat), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("quat_order", ["xyzw", "wxyz"])
def test_state_layout_is_pos_axis_angle_gripper(quat_order):
    terms, quat_xyzw = policy_group(n=5, quat_order=quat_order)
    state = eef_axis_angle_gripper_state(terms, quat_order)
    assert state.shape == (5, STATE_DIM) and state.dtype == torch.float32
    torch.testing.assert_close(state[:, 0:3], terms["eef_pos"])
    np.testing.assert_allclose(state[:, 3:6].double().numpy(), robosuite_quat2axisangle(quat_xyzw), atol=2e-5)
    torch.testing.assert_close(state[:, 6:8], terms["gripper_pos"])


def test_both_quaternion_orders_give_the_same_state():
    xyzw, _ = policy_group(n=6, quat_order="xyzw", seed=4)
    wxyz, _ = policy_group(n=6, quat_order="wxyz", seed=4)
    torch.testing.assert_close(eef_axis_angle_gripper_state(xyzw, "xyzw"), eef_axis_angle_gripper_state(wxyz, "wxyz"))


def test_model_inputs_read_each_camera_once_and_do_not_copy_images():
    terms, _ = policy_group(n=3)
    group = LazyPolicyGroup(terms)
    inputs = to_model_inputs(group, "xyzw", "stack the cubes")
    assert group.reads["table_cam"] == 1 and group.reads["wrist_cam"] == 1
    assert group.reads["joint_pos"] == 0 and group.reads["joint_vel"] == 0
    assert inputs["table_image"].data_ptr() == terms["table_cam"].data_ptr()
    assert inputs["wrist_image"].data_ptr() == terms["wrist_cam"].data_ptr()
    assert inputs["table_image"].shape == (3, 24, 32, 3) and inputs["table_image"].dtype == torch.uint8
    assert inputs["wrist_image"].shape == (3, 16, 16, 3)
    assert inputs["state"].shape == (3, 8) and inputs["state"].dtype == torch.float32
    assert inputs["task_description"] == ["stack the cubes"] * 3


def test_missing_term_error_lists_terms_without_rendering():
    terms, _ = policy_group(n=2)
    del terms["wrist_cam"]
    group = LazyPolicyGroup(terms)
    with pytest.raises(KeyError, match=r"no term 'wrist_cam'; it has \['eef_pos'"):
        to_model_inputs(group, "xyzw", "x")
    assert group.reads["table_cam"] == 1  # only the one read that happened before the missing term


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.__setitem__("table_cam", t["table_cam"].float()), "'table_cam' has dtype torch.float32"),
    (lambda t: t.__setitem__("wrist_cam", t["wrist_cam"][:1]), r"'wrist_cam' has shape \(1, 16, 16, 3\), expected \(2"),
    (lambda t: t.__setitem__("eef_quat", t["eef_quat"][:, :3]), r"'eef_quat' has shape \(2, 3\), expected \(2, 4\)"),
    (lambda t: t.__setitem__("gripper_pos", t["gripper_pos"].numpy()), "'gripper_pos' must be a torch.Tensor"),
])
def test_bad_terms_fail_with_one_line(mutate, message):
    terms, _ = policy_group(n=2)
    mutate(terms)
    with pytest.raises((ValueError, TypeError), match=message) as info:
        to_model_inputs(terms, "xyzw", "x")
    assert "\n" not in str(info.value)


def test_bad_quat_order_and_description():
    terms, _ = policy_group(n=2)
    with pytest.raises(ValueError, match="quat_order must be one of"):
        to_model_inputs(terms, "zyxw", "x")
    with pytest.raises(TypeError, match="task_description must be a str"):
        to_model_inputs(terms, "xyzw", ["x", "y"])


def test_custom_state_fn_is_used_and_checked():
    terms, _ = policy_group(n=2)
    joints = lambda group, order: torch.cat([group["joint_pos"][:, :7], group["gripper_pos"][:, :1]], dim=1)
    torch.testing.assert_close(to_model_inputs(terms, "xyzw", "x", state_fn=joints)["state"][:, :7],
                               terms["joint_pos"][:, :7])
    with pytest.raises(ValueError, match=r"state_fn returned \(2, 9\)"):
        to_model_inputs(terms, "xyzw", "x", state_fn=lambda group, order: group["joint_pos"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_cuda():
    terms, quat_xyzw = policy_group(n=4, quat_order="wxyz", device="cuda")
    inputs = to_model_inputs(terms, "wxyz", "x")
    assert inputs["state"].device.type == "cuda"
    np.testing.assert_allclose(inputs["state"][:, 3:6].cpu().double().numpy(), robosuite_quat2axisangle(quat_xyzw),
                               atol=2e-5)


@pytest.mark.parametrize("quat_order", ["xyzw", "wxyz"])
def test_stack_state_appends_cube_positions_and_quarter_turn_yaws(quat_order):
    from jaxrl_isaac.envs.obs_mapping import STACK_STATE_KEYS, eef_gripper_cubes_state

    terms, _ = policy_group(n=3, quat_order=quat_order)
    # Upright cubes at yaws chosen to cover the folding: 0.3 stays, 1.2 -> 1.2 - pi/2, -2.0 -> -2.0 + pi/2,
    # 3.0 -> 3.0 - pi, pi/4 - 1e-3 stays, -pi/4 stays (the fold is [-pi/4, pi/4)), ...
    yaws = np.array([[0.3, 1.2, -2.0], [3.0, math.pi / 4 - 1e-3, -math.pi / 4 + 1e-4], [0.0, -1.0, 2.5]])
    quat_xyzw = np.stack([np.zeros_like(yaws), np.zeros_like(yaws), np.sin(yaws / 2), np.cos(yaws / 2)], axis=-1)
    quat = quat_xyzw if quat_order == "xyzw" else quat_xyzw[..., [3, 0, 1, 2]]
    terms["cube_positions"] = torch.rand(3, 9)
    terms["cube_orientations"] = torch.tensor(quat.reshape(3, 12), dtype=torch.float32)
    state = eef_gripper_cubes_state(terms, quat_order)
    assert state.shape == (3, sum(d for _, d in STACK_STATE_KEYS)) == (3, 20) and state.dtype == torch.float32
    torch.testing.assert_close(state[:, :8], eef_axis_angle_gripper_state(terms, quat_order))
    torch.testing.assert_close(state[:, 8:17], terms["cube_positions"])
    expected = (yaws + math.pi / 4) % (math.pi / 2) - math.pi / 4  # python's % is a floor modulo, like remainder
    np.testing.assert_allclose(state[:, 17:].numpy(), expected, atol=1e-5)
    assert np.all(state[:, 17:].numpy() >= -math.pi / 4 - 1e-6) and np.all(state[:, 17:].numpy() < math.pi / 4)


def test_stack_state_names_a_missing_cube_term():
    from jaxrl_isaac.envs.obs_mapping import eef_gripper_cubes_state

    terms, _ = policy_group(n=2)
    terms["cube_positions"] = torch.zeros(2, 9)
    with pytest.raises(KeyError, match="cube_orientations"):
        eef_gripper_cubes_state(terms, "xyzw")
