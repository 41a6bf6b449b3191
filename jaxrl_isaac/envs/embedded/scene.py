"""The embedded scene: a primitive-geometry Franka Panda, a table and three cubes, written as MJCF.

Frames follow IsaacLab's stack task: the robot base (``panda_link0``) sits at the env origin on the table top
(z = 0), x points away from the robot over the table, z up. Kinematics (link offsets, joint axes and limits) are the
standard Panda ones; the visual/collision shapes are capsules and boxes (no meshes, nothing downloaded).

Contacts are kept cheap with bit masks: the table and floor collide with cubes and finger pads only; arm links
collide with cubes only (never with the table or each other); cubes collide with everything.
"""

from __future__ import annotations

import dataclasses
import math

import mujoco
import numpy as np

# --- Facts shared with the tasks (IsaacLab stack task values) ---------------------------------------------------
CUBE_EDGE = 0.0468  # m, IsaacLab's block height (cubes_stacked height_diff)
TABLE_TOP_Z = 0.0  # the robot base stands on the table top
# Table top extent in the env frame (x_min, x_max, y_min, y_max); the robot base is near the x_min edge.
TABLE_EXTENT = (-0.15, 1.05, -0.7, 0.7)
FLOOR_Z = -1.05  # IsaacLab's ground plane height in the stack scene
SIM_DT = 0.01  # s, physics step (IsaacLab sim.dt)
DECIMATION = 5  # physics steps per control step -> 20 Hz
CONTROL_DT = SIM_DT * DECIMATION

ARM_JOINT_NAMES = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINT_NAMES = ("panda_finger_joint1", "panda_finger_joint2")
ARM_JOINT_LIMITS = np.array([
    [-2.8973, 2.8973], [-1.7628, 1.7628], [-2.8973, 2.8973], [-3.0718, -0.0698],
    [-2.8973, 2.8973], [-0.0175, 3.7525], [-2.8973, 2.8973]])
FINGER_OPEN = 0.04  # m per finger (BinaryJointPositionActionCfg open command)
FINGER_CLOSED = 0.0
FINGER_MAX_SPEED = 0.2  # m/s, FRANKA_PANDA_CFG's panda_hand velocity limit
# Joint PD of IsaacLab's FRANKA_PANDA_HIGH_PD_CFG (gravity off, stiff arm for IK tracking) and its effort limits.
ARM_KP, ARM_KV = 400.0, 80.0
ARM_EFFORT_LIMITS = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)  # N m, panda_shoulder then panda_forearm
FINGER_KP, FINGER_KV, FINGER_EFFORT = 2000.0, 100.0, 200.0  # panda_hand
# IsaacLab's stack-task default pose (set_default_joint_pose): 7 arm joints then the two fingers.
DEFAULT_JOINT_POS = np.array([0.0444, -0.1894, -0.1107, -2.5148, 0.0044, 2.3775, 0.6952, 0.04, 0.04])
TCP_OFFSET = 0.1034  # m along panda_hand z: IsaacLab's ee_frame "end_effector" target (eef_pos / eef_quat)
IK_OFFSET = 0.107  # m along panda_hand z: DifferentialInverseKinematicsActionCfg body_offset
CUBE_NAMES = ("cube_1", "cube_2", "cube_3")  # blue, red, green
CUBE_RGBA = ((0.1, 0.25, 0.9, 1.0), (0.9, 0.1, 0.1, 1.0), (0.1, 0.75, 0.2, 1.0))
CAMERA_NAMES = ("table_cam", "wrist_cam")

# IsaacLab's camera intrinsics: focal length 24, horizontal aperture 20.955 (same units) -> ~47.2 deg horizontal FOV.
_FOCAL_LENGTH = 24.0
_HORIZONTAL_APERTURE = 20.955

# Contact bit masks: a pair collides when (a.contype & b.conaffinity) or (b.contype & a.conaffinity).
_BIT_STATIC, _BIT_CUBE, _BIT_ARM, _BIT_PAD = 1, 2, 4, 8
_STATIC = f'contype="{_BIT_STATIC}" conaffinity="0"'
_CUBE = f'contype="{_BIT_CUBE}" conaffinity="{_BIT_STATIC | _BIT_CUBE | _BIT_ARM | _BIT_PAD}"'
_ARM = f'contype="{_BIT_ARM}" conaffinity="0"'
_PAD = f'contype="{_BIT_PAD}" conaffinity="{_BIT_STATIC}"'
_VISUAL = 'contype="0" conaffinity="0"'
# MuJoCo contacts are soft: at rest a contact pushed by an acceleration a penetrates about (1 - d) / d * a / k with
# k ~ 1 / timeconst^2 and timeconst >= 2 * dt = 0.02 s. The 47 N finger squeeze on a 0.1 kg cube with the default
# impedance d = 0.95 sinks the pads ~2 cm into it; d -> 0.99-0.999 over 1 mm of penetration brings it to < 1 mm.
_HARD_SOLIMP = "0.99 0.999 0.001"
# Implicit integration of the stiff PD's damping (kv) divides the effect of contact forces on a joint by about
# 1 + dt * kv / m. With IsaacLab's gains (arm kv = 80, finger kv = 100) and light joints that is ~10x: held cubes slip
# and squeezed pads sink centimetres into them. An armature (reflected drive inertia) of 1 kg m^2 / 1 kg per joint
# keeps the factor below 2 without changing how fast the joints track (the PD is overdamped; its slow pole is
# kp / kv = 5 1/s for the arm either way).
_ARM_ARMATURE = 1.0
_FINGER_ARMATURE = 1.0


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """What varies between scenes: camera image sizes (they set the field of view) and the reach marker."""

    table_cam_hw: tuple[int, int] = (200, 200)
    wrist_cam_hw: tuple[int, int] = (200, 200)
    with_target_marker: bool = False


def _fovy_deg(height: int, width: int) -> float:
    """Vertical FOV of IsaacLab's pinhole camera for an H x W image (vertical aperture = horizontal * H / W)."""
    half_tan = (_HORIZONTAL_APERTURE * height / width) / (2.0 * _FOCAL_LENGTH)
    return math.degrees(2.0 * math.atan(half_tan))


def _ros_quat_to_xyaxes(quat_wxyz: tuple[float, float, float, float]) -> str:
    """IsaacLab gives camera rotations in the ROS convention (+z forward, +y down); MuJoCo cameras look along -z
    with +y up. Returns MuJoCo's ``xyaxes`` (camera x and y axes in the parent frame)."""
    w, x, y, z = np.asarray(quat_wxyz) / np.linalg.norm(quat_wxyz)
    rot = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    x_axis, y_axis = rot[:, 0], -rot[:, 1]
    return " ".join(f"{v:.6f}" for v in (*x_axis, *y_axis))


def _arm_body_geoms(rgba_light: str, rgba_dark: str) -> dict[str, str]:
    """Capsule shells of each link, in that link's frame (rough Panda outline; they collide with cubes only)."""
    light, dark = f'rgba="{rgba_light}"', f'rgba="{rgba_dark}"'
    return {
        "link0": f'''<geom type="cylinder" fromto="0 0 0 0 0 0.14" size="0.07" {light} {_VISUAL}/>
          <geom type="box" pos="-0.04 0 0.03" size="0.1 0.08 0.03" {dark} {_VISUAL}/>''',
        "link1": f'<geom type="capsule" fromto="0 0 -0.19 0 0 -0.02" size="0.06" {light} {_ARM}/>',
        "link2": f'''<geom type="cylinder" fromto="0 0 -0.06 0 0 0.06" size="0.06" {light} {_ARM}/>
          <geom type="capsule" fromto="0 -0.04 0 0 -0.2 0" size="0.055" {light} {_ARM}/>''',
        "link3": f'''<geom type="capsule" fromto="0 0 -0.14 0 0 -0.04" size="0.055" {light} {_ARM}/>
          <geom type="cylinder" fromto="0.0825 0 -0.055 0.0825 0 0.055" size="0.055" {dark} {_ARM}/>''',
        "link4": f'''<geom type="capsule" fromto="0 0 0 -0.0825 0.09 0" size="0.05" {light} {_ARM}/>''',
        "link5": f'''<geom type="capsule" fromto="0 0 -0.27 0 0 -0.09" size="0.05" {light} {_ARM}/>
          <geom type="capsule" fromto="0 0.07 -0.08 0 0.07 -0.02" size="0.035" {light} {_ARM}/>''',
        "link6": f'''<geom type="cylinder" fromto="0 0 -0.045 0 0 0.02" size="0.05" {dark} {_ARM}/>
          <geom type="capsule" fromto="0.02 0 0 0.088 0 0" size="0.04" {light} {_ARM}/>''',
        "link7": f'''<geom type="cylinder" fromto="0 0 -0.03 0 0 0.1" size="0.04" {dark} {_ARM}/>''',
    }


COARSE_TESSELLATION_MAX_SIDE = 64  # px: cameras up to this size get coarser primitives (see build_mjcf)


def build_mjcf(config: SceneConfig = SceneConfig()) -> str:
    """The whole scene as an MJCF string (robot, table, floor, cubes, cameras, optional reach marker)."""
    (th, tw), (wh, ww) = config.table_cam_hw, config.wrist_cam_hw
    for name, (h, w) in (("table_cam", (th, tw)), ("wrist_cam", (wh, ww))):
        if h <= 0 or w <= 0:
            raise ValueError(f"{name} size must be positive (height, width), got {(h, w)}")
    offwidth, offheight = max(tw, ww, 64), max(th, wh, 64)
    # How finely capsules, cylinders and spheres are tessellated: MuJoCo's default (28 slices x 16 stacks) costs a
    # software (OSMesa) frame ~1.1 ms whatever its size; for images up to 64 px a side, 12 x 6 draws the same
    # pixels within a few levels (mean |diff| 0.1 of 255 at 32 px) at ~0.7 ms per frame.
    slices, stacks = (12, 6) if max(th, tw, wh, ww) <= COARSE_TESSELLATION_MAX_SIDE else (28, 16)
    geoms = _arm_body_geoms("0.92 0.92 0.93 1", "0.25 0.25 0.25 1")
    half = CUBE_EDGE / 2.0
    x0, x1, y0, y1 = TABLE_EXTENT
    table_half = ((x1 - x0) / 2, (y1 - y0) / 2, 0.025)
    table_center = ((x1 + x0) / 2, (y1 + y0) / 2, TABLE_TOP_Z - table_half[2])
    leg_h = (TABLE_TOP_Z - 0.05 - FLOOR_Z) / 2
    legs = "\n".join(
        f'<geom type="box" pos="{lx:.3f} {ly:.3f} {FLOOR_Z + leg_h:.3f}" size="0.03 0.03 {leg_h:.3f}" '
        f'rgba="0.35 0.27 0.2 1" {_VISUAL}/>'
        for lx in (x0 + 0.06, x1 - 0.06) for ly in (y0 + 0.06, y1 - 0.06))
    cubes = "\n".join(
        f'''<body name="{name}" pos="{0.4 + 0.1 * i} 0 {half}">
      <freejoint name="{name}_joint"/>
      <geom name="{name}_geom" type="box" size="{half} {half} {half}" mass="0.1" rgba="{' '.join(map(str, rgba))}"
            friction="1 0.005 0.0001" solimp="{_HARD_SOLIMP}" {_CUBE}/>
    </body>''' for i, (name, rgba) in enumerate(zip(CUBE_NAMES, CUBE_RGBA)))
    marker = ('''<body name="target" mocap="true" pos="0.5 0 0.3">
      <site name="target_marker" type="sphere" size="0.02" rgba="1 0.5 0 1"/>
    </body>''' if config.with_target_marker else "")
    # Finger pads: the inner face of each pad lies at the finger joint position (y = q in the hand frame), so a
    # joint value of 0 means touching pads and 0.04 + 0.04 is the Panda's 8 cm opening.
    pad = (f'<geom name="{{side}}_pad" type="box" pos="0 0.006 0.043" size="0.0095 0.006 0.012" '
           f'friction="1.5 0.02 0.0001" condim="4" solimp="{_HARD_SOLIMP}" rgba="0.2 0.2 0.2 1" {_PAD}/>')
    finger_shell = (f'<geom type="box" pos="0 0.013 0.026" size="0.01 0.006 0.028" rgba="0.92 0.92 0.93 1" '
                    f'{_ARM}/>')
    finger_joint = (f'type="slide" axis="0 1 0" range="{FINGER_CLOSED} {FINGER_OPEN}" '
                    f'armature="{_FINGER_ARMATURE}"')
    actuators = "\n    ".join(
        [f'<position name="act_joint{i + 1}" joint="{joint}" kp="{ARM_KP}" kv="{ARM_KV}" '
         f'forcerange="{-effort} {effort}" ctrlrange="{low} {high}"/>'
         for i, (joint, effort, (low, high)) in enumerate(zip(ARM_JOINT_NAMES, ARM_EFFORT_LIMITS, ARM_JOINT_LIMITS))]
        + [f'<position name="act_finger{i + 1}" joint="{joint}" kp="{FINGER_KP}" kv="{FINGER_KV}" '
           f'forcerange="{-FINGER_EFFORT} {FINGER_EFFORT}" ctrlrange="{FINGER_CLOSED} {FINGER_OPEN}"/>'
           for i, joint in enumerate(FINGER_JOINT_NAMES)])
    return f'''<mujoco model="embedded_franka_cube_scene">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{SIM_DT}" integrator="implicitfast" cone="elliptic" impratio="2"/>
  <!-- per-MjData arena; a stacking episode peaks below 100 kB (22 contacts), so 1 MB leaves ample headroom -->
  <size memory="1M"/>
  <visual>
    <global offwidth="{offwidth}" offheight="{offheight}"/>
    <quality shadowsize="0" offsamples="0" numslices="{slices}" numstacks="{stacks}"/>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.4 0.4 0.4" specular="0.1 0.1 0.1"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.75 0.8 0.85" rgb2="0.35 0.4 0.45"
             width="64" height="64"/>
    <!-- untextured floor: a textured plane costs ~1 ms per software-rendered frame -->
    <material name="floor_mat" rgba="0.3 0.3 0.32 1"/>
    <material name="table_mat" rgba="0.62 0.5 0.38 1" specular="0.1"/>
  </asset>
  <default>
    <default class="panda">
      <joint armature="{_ARM_ARMATURE}" damping="0"/>
    </default>
  </default>
  <worldbody>
    <light name="key" pos="0.3 0 1.6" dir="0.1 0 -1" directional="true" castshadow="false" diffuse="0.5 0.5 0.5"/>
    <geom name="floor" type="plane" pos="0 0 {FLOOR_Z}" size="3 3 0.05" material="floor_mat" {_STATIC}/>
    <geom name="table" type="box" pos="{table_center[0]:.4f} {table_center[1]:.4f} {table_center[2]:.4f}"
          size="{table_half[0]:.4f} {table_half[1]:.4f} {table_half[2]:.4f}" material="table_mat"
          friction="0.8 0.005 0.0001" {_STATIC}/>
    {legs}
    <camera name="table_cam" pos="1.0 0 0.4" xyaxes="{_ros_quat_to_xyaxes((0.35355, -0.61237, -0.61237, 0.35355))}"
            fovy="{_fovy_deg(th, tw):.4f}"/>
    <body name="panda_link0" childclass="panda" gravcomp="1">
      <inertial pos="-0.041 0 0.05" mass="0.63" diaginertia="0.0032 0.0039 0.0043"/>
      {geoms["link0"]}
      <body name="panda_link1" pos="0 0 0.333" gravcomp="1">
        <inertial pos="0.0039 0.0021 -0.0476" mass="4.97" diaginertia="0.7034 0.7066 0.0091"/>
        <joint name="panda_joint1" axis="0 0 1" range="{ARM_JOINT_LIMITS[0, 0]} {ARM_JOINT_LIMITS[0, 1]}"/>
        {geoms["link1"]}
        <body name="panda_link2" quat="0.7071068 -0.7071068 0 0" gravcomp="1">
          <inertial pos="-0.0031 -0.0287 0.0035" mass="0.65" diaginertia="0.008 0.0281 0.026"/>
          <joint name="panda_joint2" axis="0 0 1" range="{ARM_JOINT_LIMITS[1, 0]} {ARM_JOINT_LIMITS[1, 1]}"/>
          {geoms["link2"]}
          <body name="panda_link3" pos="0 -0.316 0" quat="0.7071068 0.7071068 0 0" gravcomp="1">
            <inertial pos="0.0275 0.0393 -0.0665" mass="3.23" diaginertia="0.0372 0.0362 0.0108"/>
            <joint name="panda_joint3" axis="0 0 1" range="{ARM_JOINT_LIMITS[2, 0]} {ARM_JOINT_LIMITS[2, 1]}"/>
            {geoms["link3"]}
            <body name="panda_link4" pos="0.0825 0 0" quat="0.7071068 0.7071068 0 0" gravcomp="1">
              <inertial pos="-0.0532 0.1044 0.0275" mass="3.59" diaginertia="0.0259 0.0196 0.0283"/>
              <joint name="panda_joint4" axis="0 0 1" range="{ARM_JOINT_LIMITS[3, 0]} {ARM_JOINT_LIMITS[3, 1]}"/>
              {geoms["link4"]}
              <body name="panda_link5" pos="-0.0825 0.384 0" quat="0.7071068 -0.7071068 0 0" gravcomp="1">
                <inertial pos="-0.012 0.0411 -0.0384" mass="1.23" diaginertia="0.0355 0.0295 0.0086"/>
                <joint name="panda_joint5" axis="0 0 1" range="{ARM_JOINT_LIMITS[4, 0]} {ARM_JOINT_LIMITS[4, 1]}"/>
                {geoms["link5"]}
                <body name="panda_link6" quat="0.7071068 0.7071068 0 0" gravcomp="1">
                  <inertial pos="0.0601 -0.0141 -0.0105" mass="1.67" diaginertia="0.002 0.0044 0.0054"/>
                  <joint name="panda_joint6" axis="0 0 1" range="{ARM_JOINT_LIMITS[5, 0]} {ARM_JOINT_LIMITS[5, 1]}"/>
                  {geoms["link6"]}
                  <body name="panda_link7" pos="0.088 0 0" quat="0.7071068 0.7071068 0 0" gravcomp="1">
                    <inertial pos="0.0105 -0.0043 0.0616" mass="0.74" diaginertia="0.0125 0.01 0.0048"/>
                    <joint name="panda_joint7" axis="0 0 1" range="{ARM_JOINT_LIMITS[6, 0]} {ARM_JOINT_LIMITS[6, 1]}"/>
                    {geoms["link7"]}
                    <body name="panda_hand" pos="0 0 0.107" quat="0.9238795 0 0 -0.3826834" gravcomp="1">
                      <inertial pos="-0.01 0 0.03" mass="0.73" diaginertia="0.001 0.0025 0.0017"/>
                      <geom name="hand" type="box" pos="0 0 0.03" size="0.022 0.095 0.028"
                            rgba="0.92 0.92 0.93 1" {_ARM}/>
                      <geom type="cylinder" fromto="0 0 -0.01 0 0 0.005" size="0.04" rgba="0.25 0.25 0.25 1"
                            {_VISUAL}/>
                      <site name="tcp" pos="0 0 {TCP_OFFSET}" size="0.005" rgba="1 1 0 0" group="4"/>
                      <site name="ik_frame" pos="0 0 {IK_OFFSET}" size="0.005" rgba="0 1 1 0" group="4"/>
                      <camera name="wrist_cam" pos="0.13 0 -0.15"
                              xyaxes="{_ros_quat_to_xyaxes((-0.70614, 0.03701, 0.03701, -0.70614))}"
                              fovy="{_fovy_deg(wh, ww):.4f}"/>
                      <body name="panda_leftfinger" pos="0 0 0.0584" gravcomp="1">
                        <inertial pos="0 0.01 0.03" mass="0.015" diaginertia="2.4e-6 2.4e-6 7.5e-7"/>
                        <joint name="panda_finger_joint1" {finger_joint}/>
                        {finger_shell}
                        {pad.format(side="left")}
                      </body>
                      <body name="panda_rightfinger" pos="0 0 0.0584" quat="0 0 0 1" gravcomp="1">
                        <inertial pos="0 0.01 0.03" mass="0.015" diaginertia="2.4e-6 2.4e-6 7.5e-7"/>
                        <joint name="panda_finger_joint2" {finger_joint}/>
                        {finger_shell}
                        {pad.format(side="right")}
                      </body>
                    </body>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
    {cubes}
    {marker}
  </worldbody>
  <actuator>
    {actuators}
  </actuator>
</mujoco>
'''


@dataclasses.dataclass(frozen=True)
class SceneIndex:
    """Addresses into MjModel/MjData arrays that the env reads every step (resolved once by name)."""

    arm_qpos: np.ndarray  # (7,) qpos addresses of the arm joints
    arm_dof: np.ndarray  # (7,) dof addresses of the arm joints
    finger_qpos: np.ndarray  # (2,)
    finger_dof: np.ndarray  # (2,)
    cube_qpos: np.ndarray  # (3,) start address of each cube's free joint (pos 3 + quat wxyz 4)
    cube_dof: np.ndarray  # (3,) start dof address of each cube's free joint (lin vel 3 world, ang vel 3 local)
    tcp_site: int
    ik_site: int
    target_mocap: int  # -1 when the scene has no reach marker
    num_actuators: int


def index_scene(model: mujoco.MjModel) -> SceneIndex:
    """Resolve the names used by the env into array addresses."""
    def joint(name: str) -> int:
        return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)

    arm = [joint(n) for n in ARM_JOINT_NAMES]
    fingers = [joint(n) for n in FINGER_JOINT_NAMES]
    cubes = [joint(f"{n}_joint") for n in CUBE_NAMES]
    target_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "target")
    return SceneIndex(
        arm_qpos=model.jnt_qposadr[arm].copy(), arm_dof=model.jnt_dofadr[arm].copy(),
        finger_qpos=model.jnt_qposadr[fingers].copy(), finger_dof=model.jnt_dofadr[fingers].copy(),
        cube_qpos=model.jnt_qposadr[cubes].copy(), cube_dof=model.jnt_dofadr[cubes].copy(),
        tcp_site=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "tcp"),
        ik_site=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "ik_frame"),
        target_mocap=int(model.body_mocapid[target_body]) if target_body >= 0 else -1,
        num_actuators=model.nu)


def load_scene(config: SceneConfig = SceneConfig()) -> tuple[mujoco.MjModel, SceneIndex]:
    """Compile the scene and index it."""
    model = mujoco.MjModel.from_xml_string(build_mjcf(config))
    return model, index_scene(model)
