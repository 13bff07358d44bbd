"""Generate the embedded synthetic NTU-25 skeleton action dataset (no download needed).

The output matches the NTU ``*_position.npy`` files after the family's 50-frame preprocessing:

* ``{train,val}_position.npy``: float32 ``(N, C=3, T=50, V=25, M=2)``, metres, y up, person 0's
  spine-shoulder joint (index 20) at the origin in the first frame (the global translation of jumps
  and steps is kept), a single person roughly facing the camera (within +-65 deg; the body's forward
  direction is -z, its right +x, as in Kinect camera space), the two persons of an interaction
  facing each other side-on; an absent person is all zeros;
* ``{train,val}_label.pkl``: a pickled tuple ``(sample_names, labels)``, labels 0-based.

Classes (``CLASS_NAMES``): wave_hand, clap_hands, raise_both_arms, punch_forward, kick_forward,
squat_down, bow, jump_up and the two-person handshake and push.

Every skeleton is built by forward kinematics on the NTU joint tree (``layout.parents``, rooted at
the spine base) from a base skeleton scaled per subject, posed by a per-class motion program on joint
angles. Each sample varies subject (bone lengths), viewpoint, speed, phase, amplitude, idle frames at
both ends, idle posture and sway, action-unrelated fidgets (a free hand to the face, weight shifts, a
step away), sensor noise and glitches; 15% of single-person samples have a static bystander as the
second person. The classes share limbs and statistics: raw-coordinate nearest-centroid
classification is far from perfect (see ``tests/test_synthetic.py``), while a representation that
understands motion can separate them.

The default size (10 classes x (32 train + 16 val) samples, 14 MB) keeps the files small;
``--num-train-per-class`` and ``--num-val-per-class`` make it larger (each sample is 30 kB).

Usage::

    python tools/gen_synthetic.py                      # data/synthetic, seed 0, 10 classes
    python tools/gen_synthetic.py --seed 1 --num-train-per-class 64 --out-folder data/synthetic_big
"""
import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import numpy as np  # noqa: E402

from feeder.preprocess import save_labels  # noqa: E402
from net.utils.layouts import get_layout  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import StagedFiles, check_finite, run_tool  # noqa: E402
from torchlight.progress import Progress  # noqa: E402

LAYOUT = get_layout('ntu-rgb+d')
NUM_JOINT = LAYOUT.num_node

# NTU joints, 0-based
(SPINE_BASE, SPINE_MID, NECK, HEAD, L_SHOULDER, L_ELBOW, L_WRIST, L_HAND, R_SHOULDER, R_ELBOW,
 R_WRIST, R_HAND, L_HIP, L_KNEE, L_ANKLE, L_FOOT, R_HIP, R_KNEE, R_ANKLE, R_FOOT, SPINE_SHOULDER,
 L_TIP, L_THUMB, R_TIP, R_THUMB) = range(25)

# The NTU tree re-rooted at the spine base (same bones as ``LAYOUT.parents``), so the legs hang from
# the pelvis and the trunk can bend at the hips.
ROOT = SPINE_BASE
PARENTS = dataclasses.replace(LAYOUT, center=ROOT).parents


def _fk_order():
    order, todo = [], [ROOT]
    while todo:
        j = todo.pop(0)
        order.append(j)
        todo += [c for c in range(NUM_JOINT) if PARENTS[c] == j and c != j]
    return order


FK_ORDER = _fk_order()

# Base skeleton (an adult of ~1.7 m) standing upright, arms hanging, in the body frame:
# x = the person's right, y = up, z = backward (the person faces -z). Metres, floor at y = 0.
_REST_LEFT_HALF = {
    SPINE_BASE: (0.0, 0.95, 0.0), SPINE_MID: (0.0, 1.22, 0.01), SPINE_SHOULDER: (0.0, 1.45, 0.0),
    NECK: (0.0, 1.53, 0.0), HEAD: (0.0, 1.66, -0.01),
    L_SHOULDER: (-0.18, 1.42, 0.0), L_ELBOW: (-0.21, 1.15, 0.01), L_WRIST: (-0.22, 0.90, 0.0),
    L_HAND: (-0.22, 0.83, -0.01), L_TIP: (-0.22, 0.75, -0.01), L_THUMB: (-0.20, 0.82, -0.05),
    L_HIP: (-0.09, 0.90, 0.0), L_KNEE: (-0.10, 0.50, -0.01), L_ANKLE: (-0.10, 0.08, 0.01),
    L_FOOT: (-0.11, 0.03, -0.11),
}
_MIRROR = {L_SHOULDER: R_SHOULDER, L_ELBOW: R_ELBOW, L_WRIST: R_WRIST, L_HAND: R_HAND,
           L_TIP: R_TIP, L_THUMB: R_THUMB, L_HIP: R_HIP, L_KNEE: R_KNEE, L_ANKLE: R_ANKLE,
           L_FOOT: R_FOOT}
REST = np.zeros((NUM_JOINT, 3))
for _j, _p in _REST_LEFT_HALF.items():
    REST[_j] = _p
    if _j in _MIRROR:
        REST[_MIRROR[_j]] = (-_p[0], _p[1], _p[2])
REST_OFFSETS = np.array([REST[j] - REST[PARENTS[j]] if j != ROOT else REST[j] for j in range(NUM_JOINT)])
FEET = [L_ANKLE, L_FOOT, R_ANKLE, R_FOOT]
# bones named by their child joint; a bone's rotation pivots at its parent joint
UPPER_ARM = {'L': L_ELBOW, 'R': R_ELBOW}
FOREARM = {'L': L_WRIST, 'R': R_WRIST}
THIGH = {'L': L_KNEE, 'R': R_KNEE}
SHIN = {'L': L_ANKLE, 'R': R_ANKLE}
FOOT = {'L': L_FOOT, 'R': R_FOOT}
SIDE_SIGN = {'L': -1.0, 'R': 1.0}   # rotations about y and z flip sign in the mirror image

CLASS_NAMES = ['wave_hand', 'clap_hands', 'raise_both_arms', 'punch_forward', 'kick_forward',
               'squat_down', 'bow', 'jump_up', 'handshake', 'push']
INTERACTION_CLASSES = ('handshake', 'push')


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------

def _rot(axis, deg):
    """Rotation matrices about a coordinate axis, ``deg`` of any shape -> ``(..., 3, 3)``."""
    a = np.deg2rad(np.asarray(deg, dtype=np.float64))
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    rows = {'x': [[o, z, z], [z, c, -s], [z, s, c]],
            'y': [[c, z, s], [z, o, z], [-s, z, c]],
            'z': [[c, -s, z], [s, c, z], [z, z, o]]}[axis]
    return np.stack([np.stack(r, -1) for r in rows], -2)


def euler_to_matrix(angles):
    """``(..., 3)`` angles (deg) about x, y, z -> ``Ry @ Rz @ Rx``.

    For a limb hanging down, x is flexion (forward elevation; negative for the knee), y then swings
    the raised limb horizontally (plane of elevation: positive toward the midline for the right
    side) and z is abduction (outward for the right side)."""
    return _rot('y', angles[..., 1]) @ _rot('z', angles[..., 2]) @ _rot('x', angles[..., 0])


def forward_kinematics(offsets, angles):
    """Joint positions ``(T, V, 3)`` from bone offsets ``(V, 3)`` and bone angles ``(T, V, 3)``.

    Bone ``c`` (from ``PARENTS[c]`` to ``c``) has the frame ``F_c = F_parent @ R_c`` and
    ``p_c = p_parent + F_c @ offset_c``; the root's offset is its rest position."""
    rot = euler_to_matrix(angles)
    frames = np.empty_like(rot)
    pos = np.empty(angles.shape)
    frames[:, ROOT] = rot[:, ROOT]
    pos[:, ROOT] = offsets[ROOT]
    for c in FK_ORDER[1:]:
        p = PARENTS[c]
        frames[:, c] = frames[:, p] @ rot[:, c]
        pos[:, c] = pos[:, p] + frames[:, c] @ offsets[c]
    return pos


def smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def bump(x, a, b):
    """A smooth 0 -> 1 -> 0 bump on ``[a, b]`` (sin^2), zero outside."""
    y = np.clip((x - a) / (b - a), 0.0, 1.0)
    return np.sin(np.pi * y) ** 2


# ----------------------------------------------------------------------------------------------
# subjects, poses and the per-sample timing context
# ----------------------------------------------------------------------------------------------

def random_subject(rng):
    """Bone offsets of one subject: global scale 0.87-1.13 and ~4% per-bone (left/right symmetric)
    jitter of the base skeleton."""
    scale = rng.uniform(0.87, 1.13)
    jitter = np.clip(rng.normal(1.0, 0.04, NUM_JOINT), 0.9, 1.1)
    for left, right in _MIRROR.items():
        jitter[right] = jitter[left] * rng.normal(1.0, 0.01)
    offsets = REST_OFFSETS * scale * jitter[:, None]
    offsets[ROOT] = REST[ROOT] * scale
    return offsets


class Pose:
    """Bone angles ``(T, V, 3)`` (degrees) and a body-frame root translation ``(T, 3)``; motion
    programs add to them with the limb helpers below."""

    def __init__(self, T):
        self.angles = np.zeros((T, NUM_JOINT, 3))
        self.shift = np.zeros((T, 3))
        self.anchor = [L_ANKLE, R_ANKLE]   # joints kept in place horizontally (the stance feet)
        self.busy = set()                  # limbs the action uses ('L', 'R' arms), left to fidgets

    def arm(self, side, elev=0.0, plane=0.0, elbow=0.0):
        """Shoulder elevation (forward-up), its plane (+ toward the midline, - to the side) and
        elbow flexion."""
        s = SIDE_SIGN[side]
        self.angles[:, UPPER_ARM[side], 0] += elev
        self.angles[:, UPPER_ARM[side], 1] += s * plane
        self.angles[:, FOREARM[side], 0] += elbow

    def leg(self, side, hip=0.0, knee=0.0, abd=0.0, ankle=0.0):
        """Hip flexion (thigh forward), knee flexion (shank backward), hip abduction, ankle."""
        s = SIDE_SIGN[side]
        self.angles[:, THIGH[side], 0] += hip
        self.angles[:, THIGH[side], 2] += s * abd
        self.angles[:, SHIN[side], 0] -= knee
        self.angles[:, FOOT[side], 0] += ankle

    def trunk(self, flex=0.0, lean=0.0, twist=0.0):
        """Trunk flexion forward (at the hips and the mid spine), lean to the right, twist."""
        for bone, share in ((SPINE_MID, 0.65), (SPINE_SHOULDER, 0.35)):
            self.angles[:, bone, 0] -= share * flex
            self.angles[:, bone, 2] -= share * lean
            self.angles[:, bone, 1] += share * twist

    def head(self, flex=0.0):
        self.angles[:, NECK, 0] -= 0.4 * flex
        self.angles[:, HEAD, 0] -= 0.6 * flex


@dataclasses.dataclass
class Ctx:
    """Timing and style of one sample: ``u`` is the action's progress (0 in the leading idle
    frames, 1 in the trailing ones), ``speed`` 0.7-1.4x, ``amp`` 0.7-1.3x, ``phase`` in radians."""
    rng: np.random.Generator
    u: np.ndarray
    speed: float
    amp: float
    phase: float

    def cycle(self, base_cycles):
        """Phase angle of a periodic motion doing ``base_cycles * speed`` cycles over the action."""
        return 2 * np.pi * base_cycles * self.speed * self.u + self.phase

    def pulse(self, rise=0.25):
        """One-shot motion: 0 -> 1, hold, -> 0; faster subjects rise faster and hold longer."""
        r = float(np.clip(rise / self.speed * self.rng.uniform(0.8, 1.2), 0.08, 0.4))
        a = self.rng.uniform(0.0, 0.1)
        b = 1.0 - r - self.rng.uniform(0.0, 0.1)
        return smoothstep((self.u - a) / r) * (1 - smoothstep((self.u - b) / r))


def idle_posture(pose, rng, T, sway=2.5):
    """A relaxed standing posture that differs per sample, plus slow sway (up to ``sway`` degrees)
    of every bone."""
    for side in 'LR':
        pose.arm(side, elev=rng.uniform(0, 12), plane=rng.uniform(-10, 10), elbow=rng.uniform(5, 25))
        pose.leg(side, hip=rng.uniform(-3, 5), knee=rng.uniform(0, 8), abd=rng.uniform(0, 6))
    pose.trunk(flex=rng.uniform(-6, 6), lean=rng.uniform(-4, 4), twist=rng.uniform(-6, 6))
    pose.head(flex=rng.uniform(-10, 10))
    t = np.arange(T)[:, None, None] / T
    for _ in range(2):
        freq = rng.uniform(0.3, 1.5, (1, NUM_JOINT, 3))
        pose.angles += rng.uniform(0, sway, (1, NUM_JOINT, 3)) * np.sin(
            2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, (1, NUM_JOINT, 3)))


def fidget(ctx, pose):
    """Action-unrelated movements that NTU subjects make: with a free arm, touch the face, put the
    hand on the hip or swing it; with the body, shift the weight, twist or drift a step away."""
    rng, u = ctx.rng, ctx.u
    free = [side for side in 'LR' if side not in pose.busy]
    if free and rng.random() < 0.4:
        side = free[rng.integers(len(free))]
        start = rng.uniform(0.0, 0.6)
        window = bump(u, start, start + rng.uniform(0.3, 0.5)) ** 0.5
        kind = rng.integers(3)
        if kind == 0:     # touch the face / scratch the head
            pose.arm(side, elev=window * rng.uniform(90, 140), plane=window * rng.uniform(20, 50),
                     elbow=window * rng.uniform(110, 145))
        elif kind == 1:   # hand on the hip, held
            pose.arm(side, elev=rng.uniform(25, 45), plane=-80, elbow=rng.uniform(70, 100))
        else:             # pendular swing
            pose.arm(side, elev=rng.uniform(10, 25) * np.sin(2 * np.pi * rng.uniform(1, 2.5) * u
                                                             + rng.uniform(0, 2 * np.pi)))
    if rng.random() < 0.5:
        kind = rng.integers(3)
        if kind == 0:     # weight shift from foot to foot
            sway = np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * u + rng.uniform(0, 2 * np.pi))
            pose.trunk(lean=sway * rng.uniform(3, 8))
            pose.shift[:, 0] += sway * rng.uniform(0.02, 0.06)
        elif kind == 1:   # trunk twist
            pose.trunk(twist=np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * u) * rng.uniform(8, 20))
        else:             # drift: the subject steps away during the clip
            step = smoothstep((u - rng.uniform(0, 0.5)) / rng.uniform(0.2, 0.5))
            pose.shift[:, [0, 2]] += step[:, None] * rng.uniform(-0.3, 0.3, 2)


# ----------------------------------------------------------------------------------------------
# motion programs: each adds one class's motion to ``pose`` (two poses for interactions)
# ----------------------------------------------------------------------------------------------

def wave_hand(ctx, pose):
    """NTU A023 'hand waving': one arm (the right in 80% of samples) is raised to the side and the
    forearm swings left-right in the frontal plane 2-4 times."""
    rng, lift = ctx.rng, ctx.pulse(0.2)
    side = 'R' if rng.random() < 0.8 else 'L'
    swing = np.sin(ctx.cycle(3.0)) * rng.uniform(20, 35) * ctx.amp
    pose.arm(side, elev=lift * rng.uniform(80, 130), plane=lift * rng.uniform(-90, -55),
             elbow=lift * (rng.uniform(60, 100) + swing))
    pose.trunk(lean=-SIDE_SIGN[side] * lift * rng.uniform(0, 5))
    pose.busy = {side}


def clap_hands(ctx, pose):
    """NTU A010 'clapping': both arms forward (overhead in 15% of samples), the hands meet at the
    midline and open 3-5 times."""
    rng, reach = ctx.rng, ctx.pulse(0.15)
    open_close = np.cos(ctx.cycle(4.0)) * rng.uniform(22, 32) * ctx.amp
    mid, elev, elbow = rng.uniform(-10, 5), rng.uniform(45, 80), rng.uniform(25, 55)
    if rng.random() < 0.15:
        elev = rng.uniform(130, 160)
    pose.busy = {'L', 'R'}
    for side in 'LR':
        pose.arm(side, elev=reach * elev, plane=reach * (mid + open_close), elbow=reach * elbow)


def raise_both_arms(ctx, pose):
    """'Raise both arms' (cf. NTU A022 'cheer up'): both arms are lifted overhead, from the front
    or the side, held and lowered."""
    rng = ctx.rng
    top = float(np.clip(rng.uniform(135, 170) * ctx.amp, 100, 178))
    plane, elbow = rng.uniform(-70, 0), rng.uniform(0, 25)
    lift = ctx.pulse(0.3)
    for side in 'LR':
        lift_side = np.interp(ctx.u - rng.uniform(0, 0.04), ctx.u, lift)   # a slight lag
        pose.arm(side, elev=lift_side * (top + rng.uniform(-6, 6)), plane=lift_side * plane,
                 elbow=lift_side * elbow)
    pose.head(flex=-lift * rng.uniform(0, 15))
    pose.busy = {'L', 'R'}


def punch_forward(ctx, pose):
    """NTU A050 'punching/slapping' without a partner: from a guard with the fists near the chin,
    the arms alternately extend straight forward (in 25% of samples only the right arm punches,
    twice as often)."""
    rng, guard = ctx.rng, ctx.pulse(0.15)
    one_arm = rng.random() < 0.25
    phi = ctx.cycle(2.5)
    g_elev, g_elbow, plane = rng.uniform(20, 40), rng.uniform(105, 130), rng.uniform(8, 20)
    strikes = {}
    for side, offset in (('R', 0.0), ('L', np.pi)):
        if one_arm:
            strike = guard * (0.5 + 0.5 * np.cos(2 * phi)) ** 4 * (side == 'R')
        else:
            strike = guard * (0.5 + 0.5 * np.cos(phi + offset)) ** 4
        strikes[side] = strike
        pose.arm(side, elev=guard * g_elev + strike * rng.uniform(45, 60) * ctx.amp,
                 plane=guard * plane, elbow=guard * g_elbow - strike * (g_elbow - rng.uniform(0, 15)))
    pose.trunk(twist=10 * (strikes['R'] - strikes['L']), flex=guard * rng.uniform(0, 10))
    pose.busy = {'L', 'R'}


def kick_forward(ctx, pose):
    """NTU A024 'kicking something': one leg (usually the right) chambers and kicks forward, once or
    twice, with the trunk leaning back."""
    rng = ctx.rng
    side = 'R' if rng.random() < 0.75 else 'L'
    other = 'L' if side == 'R' else 'R'
    n = rng.choice([1, 2], p=[0.6, 0.4])
    a, b = rng.uniform(0.0, 0.1), rng.uniform(0.9, 1.0)
    psi = np.clip((ctx.u - a) / (b - a), 0, 1) * n % 1.0
    psi[ctx.u >= b] = 0.0
    chamber = np.sin(np.pi * psi) ** 2
    extend = bump(psi, 0.3, 0.7)
    knee_max = rng.uniform(60, 95)
    pose.leg(side, hip=chamber * rng.uniform(25, 40) + extend * rng.uniform(30, 50) * ctx.amp,
             knee=chamber * knee_max * (1 - 0.9 * extend), ankle=extend * rng.uniform(0, 25))
    pose.trunk(flex=-extend * rng.uniform(3, 12))
    pose.arm(other, elev=extend * rng.uniform(5, 30))
    pose.anchor = [SHIN[other]]


def squat_down(ctx, pose):
    """NTU A008 'sitting down' / squatting: hips and knees flex with the feet flat on the floor and
    the trunk leaning forward, then the subject stands up."""
    rng, down = ctx.rng, ctx.pulse(0.3)
    hip = float(np.clip(rng.uniform(75, 100) * ctx.amp, 55, 115))
    knee = hip + rng.uniform(10, 30)
    for side in 'LR':
        pose.leg(side, hip=down * hip, knee=down * knee, abd=down * rng.uniform(3, 15),
                 ankle=down * (knee - hip))
        pose.arm(side, elev=down * rng.uniform(10, 80), elbow=down * rng.uniform(0, 40))
    pose.trunk(flex=down * rng.uniform(20, 40))
    pose.busy = {'L', 'R'}


def bow(ctx, pose):
    """NTU A035 'nod head/bow': the trunk bends forward at the hips, head down, arms hanging, and
    comes back up."""
    rng, down = ctx.rng, ctx.pulse(0.25)
    flex = float(np.clip(rng.uniform(45, 80) * ctx.amp, 30, 95))
    pose.trunk(flex=down * flex)
    pose.head(flex=down * rng.uniform(5, 20))
    hang = rng.uniform(0.5, 1.0)   # arms partly follow gravity
    for side in 'LR':
        pose.arm(side, elev=down * flex * hang)
        pose.leg(side, knee=down * rng.uniform(0, 12))


def jump_up(ctx, pose):
    """NTU A027 'jump up': 1-3 hops, each a crouch with the arms swung back, a flight with the arms
    swung up and the toes pointed, and a landing crouch."""
    rng = ctx.rng
    n = int(rng.integers(1, 4))
    a, b = rng.uniform(0.0, 0.1), rng.uniform(0.9, 1.0)
    psi = np.clip((ctx.u - a) / (b - a), 0, 1) * n % 1.0
    psi[ctx.u >= b] = 0.0
    crouch = bump(psi, 0.0, 0.38) + 0.6 * bump(psi, 0.72, 0.95)
    flight = np.sin(np.pi * np.clip((psi - 0.38) / 0.34, 0, 1))
    hip, knee = rng.uniform(35, 60), rng.uniform(60, 100)
    for side in 'LR':
        pose.leg(side, hip=crouch * hip, knee=crouch * knee, ankle=crouch * (knee - hip) - 20 * flight)
        pose.arm(side, elev=-25 * crouch + flight * rng.uniform(40, 110), elbow=crouch * 20)
    pose.trunk(flex=crouch * rng.uniform(10, 25))
    pose.shift[:, 1] += flight * rng.uniform(0.12, 0.3) * ctx.amp
    pose.busy = {'L', 'R'}


def handshake(ctx, poses):
    """NTU A058 'shaking hands': two persons facing each other reach their right hands to the
    middle and shake them up and down 3-5 times."""
    rng = ctx.rng
    reach = ctx.pulse(0.2)
    shake = reach ** 4 * np.sin(ctx.cycle(4.0)) * rng.uniform(8, 16) * ctx.amp
    for pose in poses:
        lagged = np.interp(ctx.u - rng.uniform(0, 0.05), ctx.u, reach)
        pose.arm('R', elev=lagged * rng.uniform(40, 60), plane=lagged * rng.uniform(10, 25),
                 elbow=lagged * rng.uniform(30, 50) + shake)
        pose.trunk(flex=lagged * rng.uniform(3, 10))
        pose.busy = {'R'}


def push(ctx, poses):
    """NTU A052 'pushing other person': the pusher raises both hands and extends them while stepping
    in; the pushed person is driven backward, leans back and steps back with one leg."""
    rng = ctx.rng
    pusher, pushed = poses if rng.random() < 0.5 else poses[::-1]
    t_hit = rng.uniform(0.35, 0.55) / np.sqrt(ctx.speed)
    hit = smoothstep((ctx.u - t_hit) / 0.12)
    recoil = bump(ctx.u, t_hit - 0.02, t_hit + 0.4)
    arms = ctx.pulse(0.2)
    elbow = rng.uniform(70, 100)
    for side in 'LR':
        pusher.arm(side, elev=arms * rng.uniform(60, 85), plane=arms * rng.uniform(5, 20),
                   elbow=arms * elbow * (1 - 0.85 * hit * arms))
        pushed.arm(side, elev=recoil * rng.uniform(15, 45), elbow=recoil * rng.uniform(20, 60))
    pusher.trunk(flex=hit * arms * rng.uniform(5, 15))
    pusher.shift[:, 2] -= hit * arms * rng.uniform(0.05, 0.2)
    pushed.trunk(flex=-recoil * rng.uniform(5, 15))
    pushed.leg(rng.choice(['L', 'R']), hip=-recoil * rng.uniform(10, 25), knee=recoil * 10)
    pushed.shift[:, 2] += hit * rng.uniform(0.15, 0.4) * ctx.amp
    pusher.busy = pushed.busy = {'L', 'R'}


PROGRAMS = {'wave_hand': wave_hand, 'clap_hands': clap_hands,
            'raise_both_arms': raise_both_arms, 'punch_forward': punch_forward,
            'kick_forward': kick_forward, 'squat_down': squat_down, 'bow': bow, 'jump_up': jump_up,
            'handshake': handshake, 'push': push}
assert list(PROGRAMS) == CLASS_NAMES


# ----------------------------------------------------------------------------------------------
# one sample
# ----------------------------------------------------------------------------------------------

def pose_to_joints(pose, offsets):
    """FK, then keep the lowest foot joint on the floor and the anchor (stance) joints in place
    horizontally, then apply the program's root translation. Body frame, ``(T, V, 3)``."""
    joints = forward_kinematics(offsets, pose.angles)
    floor = forward_kinematics(offsets, np.zeros_like(pose.angles[:1]))[0]
    joints[..., 1] -= joints[:, FEET, 1].min(axis=1, keepdims=True) - floor[FEET, 1].min()
    drift = joints[:, pose.anchor][..., [0, 2]].mean(axis=1) - joints[:1, pose.anchor][..., [0, 2]].mean(axis=1)
    joints[..., [0, 2]] -= drift[:, None]
    return joints + pose.shift[:, None]


def place(joints, yaw, position):
    """Body frame -> scene: turn by ``yaw`` degrees about y and move the root to ``position``."""
    return joints @ _rot('y', yaw).T + np.asarray(position)


def sample_one(rng, label, length=50, num_person=2, noise_std=0.01, glitch_prob=0.3,
               bystander_prob=0.15):
    """One sample ``(3, T, V, M)`` float32 of class ``label``."""
    T, name = length, CLASS_NAMES[label]
    idle_start, idle_end = rng.integers(0, 11), rng.integers(0, 11)
    u = np.clip((np.arange(T) - idle_start) / max(T - 1 - idle_start - idle_end, 1), 0.0, 1.0)
    ctx = Ctx(rng=rng, u=u, speed=rng.uniform(0.7, 1.4), amp=rng.uniform(0.7, 1.3),
              phase=rng.uniform(0, 2 * np.pi))
    interaction = name in INTERACTION_CLASSES
    n_body = 2 if interaction or rng.random() < bystander_prob else 1
    poses = [Pose(T) for _ in range(n_body)]
    for m, pose in enumerate(poses):
        idle_posture(pose, rng, T, sway=2.5 if interaction or m == 0 else 0.5)
    PROGRAMS[name](ctx, poses if interaction else poses[0])
    for pose in poses[:2 if interaction else 1]:
        fidget(ctx, pose)

    bodies = [pose_to_joints(pose, random_subject(rng)) for pose in poses]
    if interaction:
        # face each other, ~1 m apart, side-on to the camera; either person may be on the left
        yaw0 = rng.choice([-90.0, 90.0]) + rng.uniform(-20, 20)
        forward = place(np.array([[0.0, 0.0, -1.0]]), yaw0, (0, 0, 0))[0]
        dist = rng.uniform(0.85, 1.1)
        scene = [place(bodies[0], yaw0, (0, 0, 0)),
                 place(bodies[1], yaw0 + 180 + rng.uniform(-15, 15), dist * forward)]
    else:
        scene = [place(bodies[0], rng.uniform(-20, 20), (0, 0, 0))]
        if n_body == 2:   # a static bystander, as in some NTU single-person clips
            spot = (rng.choice([-1, 1]) * rng.uniform(1.2, 2.0), 0, rng.uniform(-0.3, 0.8))
            scene.append(place(bodies[1], rng.uniform(-60, 60), spot))

    # viewpoint: camera yaw +-45 deg, tilt +-10 deg, roll +-3 deg; person 0's spine shoulder at
    # the origin in the first frame
    view = _rot('z', rng.uniform(-3, 3)) @ _rot('x', rng.uniform(-10, 10)) @ _rot('y', rng.uniform(-45, 45))
    origin = scene[0][0, SPINE_SHOULDER].copy()
    scene = [(body - origin) @ view.T for body in scene]

    out = np.zeros((num_person, T, NUM_JOINT, 3))
    for m, body in enumerate(scene[:num_person]):
        # Kinect noise: ~1 cm, more on the hands and feet
        std = np.full(NUM_JOINT, float(noise_std))
        std[[L_HAND, R_HAND, L_TIP, R_TIP, L_THUMB, R_THUMB, L_FOOT, R_FOOT]] *= 1.5
        body = body + rng.normal(size=body.shape) * std[None, :, None]
        if rng.random() < glitch_prob:   # single-joint tracking glitches lasting 1-3 frames
            for _ in range(rng.integers(1, 3)):
                j, t0 = rng.integers(NUM_JOINT), rng.integers(T)
                body[t0:t0 + rng.integers(1, 4), j] += rng.normal(0, 0.12, 3)
        out[m] = body
    return out.transpose(3, 1, 2, 0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# data sets
# ----------------------------------------------------------------------------------------------

SPLIT_STREAMS = {'train': 0, 'val': 1}


def generate(seed, num_per_class, length=50, num_person=2, split='train', noise_std=0.01,
             glitch_prob=0.3, bystander_prob=0.15, progress=False):
    """Generate one split: ``(data (N, 3, T, 25, M) float32, labels list[int], names list[str])``.

    Sample ``k`` has label ``k % num_class`` and its own random stream seeded by
    ``(seed, split, k)``, so a larger ``num_per_class`` extends a smaller one and the train and val
    splits (different subjects, views, ...) never share a stream."""
    num_class = len(CLASS_NAMES)
    n = num_class * num_per_class
    data = np.zeros((n, 3, length, NUM_JOINT, num_person), dtype=np.float32)
    labels, names = [], []
    indices = range(n)
    if progress:
        indices = Progress(indices, desc=f'{split}')
    for k in indices:
        label = k % num_class
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_STREAMS[split], k]))
        data[k] = sample_one(rng, label, length=length, num_person=num_person, noise_std=noise_std,
                             glitch_prob=glitch_prob, bystander_prob=bystander_prob)
        labels.append(label)
        names.append(f'syn{split}{k:05d}A{label + 1:03d}_{CLASS_NAMES[label]}')
    return data, labels, names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out-folder', type=options.output_folder, default='data/synthetic', help='output folder')
    parser.add_argument('--seed', type=options.seed, default=0, help='random seed (same seed, same bytes)')
    parser.add_argument('--num-train-per-class', type=options.integer(1, 100_000), default=32, help='training samples per class')
    parser.add_argument('--num-val-per-class', type=options.integer(1, 100_000), default=16, help='validation samples per class')
    parser.add_argument('--length', type=options.integer(1, 10_000), default=50, help='frames per sample')
    parser.add_argument('--num-person', type=options.integer(1, 2), default=2,
                        help='bodies per sample (M); 1 drops the second person of interactions')
    parser.add_argument('--noise-std', type=options.number(0, 1), default=0.01, help='sensor noise, metres')
    parser.add_argument('--glitch-prob', type=options.fraction, default=0.3,
                        help='probability that a body has single-joint glitches')
    parser.add_argument('--bystander-prob', type=options.fraction, default=0.15,
                        help='probability of a static second person in single-person classes')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)

    with StagedFiles() as staged:              # both splits move into place together, or neither does
        for split, num in (('train', args.num_train_per_class), ('val', args.num_val_per_class)):
            data, labels, names = generate(args.seed, num, length=args.length, num_person=args.num_person,
                                           split=split, noise_std=args.noise_std,
                                           glitch_prob=args.glitch_prob,
                                           bystander_prob=args.bystander_prob, progress=not args.no_progress)
            check_finite(data, f'{split} split', 'the generator writes no NaN/Inf: check the noise settings')
            np.save(staged.path(os.path.join(args.out_folder, f'{split}_position.npy')), data)
            save_labels(staged.path(os.path.join(args.out_folder, f'{split}_label.pkl')), names, labels)
            print(f'{split}: {data.shape} float32, {data.nbytes / 2 ** 20:.1f} MiB, '
                  f'{len(CLASS_NAMES)} classes -> {args.out_folder}')


if __name__ == '__main__':
    run_tool(main)
