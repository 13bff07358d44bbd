"""Clips of one skeleton layout in another's joints, by joint names: the input of an encoder pretrained on a
dataset with another skeleton (docs/DATA.md, "An encoder pretrained on another dataset").

Every joint has a canonical name (``CANONICAL``: the built-in layouts ``ntu-rgb+d`` (Kinect v2, 25 joints),
``nw-ucla`` (Kinect v1, 20; the Kinect-v1 order of NW-UCLA, MSR Action3D, UTKinect, Florence 3D) and
``openpose`` (18), or a layout file whose ``joint_names`` are canonical names or the Kinect SDK / OpenPose
names of ``SYNONYMS``).  A target joint that the source has is copied; one it lacks is synthesised from its
neighbours by the first rule of ``SYNTHESIS`` whose joints exist (``mean``: the average; ``extend a b f``:
``b + f (b - a)``, past ``b`` along the segment ``a -> b``), e.g. from NW-UCLA to NTU: the neck is the mean of
the shoulder centre and the head, a hand tip the hand extended by the wrist-hand segment, a thumb the hand;
from OpenPose: the hip centre is the mean of the hips, the head the mean of the ears, a hand the wrist
extended by 0.3 of the forearm, a foot the ankle.  A joint-frame that is missing (all zero) in an input of a
rule is missing in its output.  Coordinates are not rescaled: map between sets in the same units.

The 50-frame step's origin (NTU's spine shoulder, NW-UCLA's shoulder centre, OpenPose's neck) is the
canonical ``shoulder_center`` in all three, so mapped arrays stay centred as the target's own are.
"""
import numpy as np

from net.utils.layouts import get_layout, name_tokens

SIDES = ('left', 'right')


def _sided(*names):
    return tuple(f'{n}_{s}' for n in names for s in SIDES)


ARM = ('shoulder', 'elbow', 'wrist', 'hand')
LEG = ('hip', 'knee', 'ankle', 'foot')
CANONICAL = {
    'ntu-rgb+d': ('hip_center', 'spine', 'neck', 'head', *(f'{j}_left' for j in ARM), *(f'{j}_right' for j in ARM),
                  *(f'{j}_left' for j in LEG), *(f'{j}_right' for j in LEG), 'shoulder_center',
                  'hand_tip_left', 'thumb_left', 'hand_tip_right', 'thumb_right'),
    'nw-ucla': ('hip_center', 'spine', 'shoulder_center', 'head', *(f'{j}_left' for j in ARM),
                *(f'{j}_right' for j in ARM), *(f'{j}_left' for j in LEG), *(f'{j}_right' for j in LEG)),
    'openpose': ('nose', 'shoulder_center', 'shoulder_right', 'elbow_right', 'wrist_right', 'shoulder_left',
                 'elbow_left', 'wrist_left', 'hip_right', 'knee_right', 'ankle_right', 'hip_left', 'knee_left',
                 'ankle_left', 'eye_right', 'eye_left', 'ear_right', 'ear_left'),
}
# names of layout files (after name_tokens, joined by '_') -> canonical names
SYNONYMS = {'hip_center': 'hip_center', 'spine_base': 'hip_center', 'pelvis': 'hip_center', 'mid_hip': 'hip_center',
            'spine': 'spine', 'spine_mid': 'spine', 'shoulder_center': 'shoulder_center',
            'spine_shoulder': 'shoulder_center', 'neck': 'neck', 'head': 'head', 'nose': 'nose',
            'hand_tip': 'hand_tip', 'handtip': 'hand_tip', 'thumb': 'thumb', 'big_toe': 'foot', 'toe': 'foot'}
# target joint -> rules, tried in order: ('mean', a, b, ...) or ('extend', a, b, f)
SYNTHESIS = {
    'hip_center': [('mean', 'hip_left', 'hip_right')],
    'shoulder_center': [('mean', 'shoulder_left', 'shoulder_right')],
    'spine': [('mean', 'hip_center', 'shoulder_center')],
    'head': [('mean', 'ear_left', 'ear_right'), ('mean', 'nose'), ('extend', 'shoulder_center', 'neck', 1.0)],
    'neck': [('mean', 'shoulder_center', 'head')],
    'nose': [('mean', 'head')],
    **{f'{part}_{side}': [('mean', 'head')] for part in ('eye', 'ear') for side in SIDES},
    **{f'hand_{side}': [('extend', f'elbow_{side}', f'wrist_{side}', 0.3)] for side in SIDES},
    **{f'wrist_{side}': [('mean', f'hand_{side}')] for side in SIDES},
    **{f'hand_tip_{side}': [('extend', f'wrist_{side}', f'hand_{side}', 1.0)] for side in SIDES},
    **{f'thumb_{side}': [('mean', f'hand_{side}')] for side in SIDES},
    **{f'foot_{side}': [('mean', f'ankle_{side}')] for side in SIDES},
    **{f'ankle_{side}': [('mean', f'foot_{side}')] for side in SIDES},
}


def canonical_names(layout):
    """The canonical joint names of a layout (a name, a file or a Layout): built-in, or from joint_names."""
    layout = get_layout(layout)
    if layout.joint_names is None and layout.name in CANONICAL:
        return CANONICAL[layout.name]
    if layout.joint_names is None:
        raise ValueError(f"layout '{layout.name}' has no joint_names: a mapping needs them (built-in layouts: "
                         f"{', '.join(CANONICAL)})")
    names = []
    for name in layout.joint_names:
        tokens = name_tokens(name)
        side = next((s for s in SIDES if s in tokens or s[0] in tokens), None)
        base = '_'.join(t for t in tokens if t not in SIDES and t not in ('l', 'r'))
        base = SYNONYMS.get(base, base)
        names.append(f'{base}_{side}' if side else base)
    return tuple(names)


def plan_mapping(source, target):
    """[(target joint name, ('copy', i) | (rule, [source-or-synthesised names], f))] for every target joint, in
    target order; a ValueError naming a joint no rule can make."""
    have = {n: i for i, n in enumerate(canonical_names(source))}
    recipe, made = {}, {}

    def make(name, trail=()):
        if name in have:
            return ('copy', have[name])
        if name in made:
            return made[name]
        for rule in SYNTHESIS.get(name, ()):
            kind, inputs = rule[0], [r for r in rule[1:] if isinstance(r, str)]
            if name in inputs or any(i in trail for i in inputs):
                continue
            try:
                parts = [make(i, trail + (name,)) for i in inputs]
            except KeyError:
                continue
            made[name] = (kind, list(zip(inputs, parts)), rule[-1] if kind == 'extend' else None)
            return made[name]
        raise KeyError(name)

    for name in canonical_names(target):
        try:
            recipe[name] = make(name)
        except KeyError:
            raise ValueError(f"no joint of layout '{get_layout(source).name}' gives the target joint {name!r} "
                             f"(source joints: {', '.join(have)})") from None
    return list(recipe.items())


def describe(step):
    """A mapping step in words: 'joint 3' (copied) or 'mean(hip_left, hip_right)'."""
    kind = step[0]
    if kind == 'copy':
        return f'joint {step[1]}'
    inputs = ', '.join(n for n, _ in step[1])
    if kind == 'mean':
        return f'as {inputs}' if len(step[1]) == 1 else f'mean({inputs})'
    return f'extend({inputs}, {step[2]:g})'


def _apply(step, data):
    """One target joint (N, C, T, M) from ``data`` (N, C, T, V, M); missing (all-zero) inputs give zeros."""
    if step[0] == 'copy':
        return data[:, :, :, step[1]]
    parts = [_apply(part, data) for _, part in step[1]]
    present = np.all([np.any(p != 0, axis=1, keepdims=True) for p in parts], axis=0)
    if step[0] == 'mean':
        value = np.mean(parts, axis=0)
    else:
        a, b = parts
        value = b + step[2] * (b - a)
    return np.where(present, value, 0.0).astype(data.dtype)


def map_clips(data, source, target):
    """``data`` (N, C, T, V_source, M) -> (N, C, T, V_target, M) in the target layout's joint order."""
    steps = plan_mapping(source, target)
    if data.shape[3] != len(canonical_names(source)):
        raise ValueError(f'the data has {data.shape[3]} joints, layout {get_layout(source).name!r} '
                         f'{len(canonical_names(source))}')
    return np.stack([_apply(step, data) for _, step in steps], axis=3)
