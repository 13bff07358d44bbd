"""Skeleton layouts as data.

A layout names the joints of a skeleton and everything the code base needs to know about them:
the bones (graph edges), the centre joint of the ST-GCN spatial partition, the joint used as the
origin in preprocessing, the shoulder pair used to align the body, the left/right mirror permutation
(spatial flip augmentation), and the part- and body-level joint groups of multi-scale models (MsMCLR).

Adding a dataset means adding an entry to ``LAYOUTS``, passing the same fields as a dict in YAML
(``graph_args: {layout: {name: ..., num_node: ..., edges: ..., center: ...}}``), or writing them into a
layout file and giving its path wherever a layout name is accepted (``layout: path/to/layout.yaml``);
no code path changes.  All indices are 0-based.  The schema of a layout file is in docs/DATA.md
("Layout files").  Descriptive keys ``joint_names``, ``part_names`` and ``body_names`` name the joints and
groups in error messages and reports; with ``joint_names``, joints may be given by name instead of index
(edges, center, origin, shoulders, flip, parts, bodies), and a missing ``flip`` (and ``shoulders``) is
derived from names with left/right in them (``left_elbow``/``right_elbow``, ``l_knee``/``r_knee``,
``ElbowLeft``/``ElbowRight``).
"""
import numbers
import os
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Tuple

from torchlight.boundary import quote
from torchlight.readers import load_yaml

NAME_KEYS = ('joint_names', 'part_names', 'body_names')


@dataclass(frozen=True)
class Layout:
    name: str
    num_node: int
    edges: Tuple[Tuple[int, int], ...]            # undirected bones, no self links
    center: int                                    # ST-GCN 'spatial' partition centre
    origin: Optional[int] = None                   # joint subtracted in preprocessing (default: center)
    shoulders: Optional[Tuple[int, int]] = None    # (left, right) for the y-rotation alignment
    flip: Optional[Tuple[int, ...]] = None         # left/right mirror permutation
    parts: Tuple[Tuple[int, ...], ...] = field(default=())   # groups of 2-3 joints
    bodies: Tuple[Tuple[int, ...], ...] = field(default=())  # groups of 4-6 joints
    joint_names: Optional[Tuple[str, ...]] = None  # descriptive: one name per joint
    part_names: Optional[Tuple[str, ...]] = None   # descriptive: one name per part group
    body_names: Optional[Tuple[str, ...]] = None   # descriptive: one name per body group
    # the joints of each described body part (MICA's part-wise FM, as GAP): ((prompt kind, joints), ...)
    text_parts: Tuple[Tuple[str, Tuple[int, ...]], ...] = field(default=())

    def __post_init__(self):
        def check(idx, what):
            if not 0 <= idx < self.num_node:
                raise ValueError(f"layout '{self.name}': {what} index {idx} is outside 0..{self.num_node - 1} "
                                 f"(num_node {self.num_node}); closest valid value: "
                                 f"{min(max(idx, 0), self.num_node - 1)}")
        for i, j in self.edges:
            check(i, 'edge')
            check(j, 'edge')
        check(self.center, 'center')
        if self.origin is not None:
            check(self.origin, 'origin')
        if self.shoulders is not None:
            if len(self.shoulders) != 2:
                raise ValueError(f"layout '{self.name}': shoulders must be a pair [left, right], got "
                                 f"{list(self.shoulders)}")
            for j in self.shoulders:
                check(j, 'shoulders')
        for group in self.parts + self.bodies + tuple(joints for _, joints in self.text_parts):
            for j in group:
                check(j, 'group')
        if self.flip is not None and sorted(self.flip) != list(range(self.num_node)):
            raise ValueError(f"layout '{self.name}': flip must be a permutation of 0..{self.num_node - 1}")
        for key, count in (('joint_names', self.num_node), ('part_names', len(self.parts)),
                           ('body_names', len(self.bodies))):
            names = getattr(self, key)
            if names is not None and len(names) != count:
                raise ValueError(f"layout '{self.name}': {key} has {len(names)} names, expected {count} "
                                 f"(one per {key.split('_')[0]})")
        if self.joint_names is not None and len(set(self.joint_names)) != len(self.joint_names):
            twice = next(n for n in self.joint_names if self.joint_names.count(n) > 1)
            raise ValueError(f"layout '{self.name}': joint name {quote(twice)} appears twice in joint_names")

    def joint(self, index) -> str:
        """'joint 4 (left_elbow)' (0-based), or 'joint 4' without joint names: for messages and reports."""
        if self.joint_names is None:
            return f'joint {index}'
        return f'joint {index} ({self.joint_names[index]})'

    def group_name(self, scale, index) -> str:
        """The name of part / body group ``index`` (``scale`` 'part' | 'body'), or 'part 3'."""
        names = getattr(self, f'{scale}_names')
        return names[index] if names is not None else f'{scale} {index}'

    def describe(self) -> str:
        """One line for logs: name, joints, and which optional fields are present."""
        have = [key for key in ('shoulders', 'flip') if getattr(self, key) is not None]
        have += [f'{len(getattr(self, key))} {key}' for key in ('parts', 'bodies') if getattr(self, key)]
        named = ', joint names' if self.joint_names is not None else ''
        return f"layout '{self.name}' ({self.num_node} joints, centre {self.joint(self.center)}" + \
            (f", {', '.join(have)}" if have else '') + f'{named})'

    def skeleton(self):
        """What feeder and model use (everything but the name and the descriptive names), keyed by
        ``SKELETON_FIELDS``: two layouts with the same skeleton are interchangeable."""
        return {'num_node': self.num_node, 'edges': frozenset(tuple(sorted(e)) for e in self.edges),
                'center': self.center, 'origin': self.origin_joint, 'shoulders': self.shoulders,
                'flip': self.flip, 'parts': self.parts, 'bodies': self.bodies, 'text_parts': self.text_parts}

    def differences(self, other):
        """The skeleton fields in which two layouts differ (empty: the same skeleton)."""
        mine, theirs = self.skeleton(), get_layout(other).skeleton()
        return [key for key in mine if mine[key] != theirs[key]]

    @property
    def origin_joint(self) -> int:
        return self.center if self.origin is None else self.origin

    @property
    def parents(self) -> Tuple[int, ...]:
        """Parent of each joint on the tree rooted at ``center`` (the centre is its own parent).

        For ``ntu-rgb+d`` this gives exactly the 25 bone pairs of the AimCLR/CrosSCLR bone stream."""
        adj = [[] for _ in range(self.num_node)]
        for i, j in self.edges:
            adj[i].append(j)
            adj[j].append(i)
        parent = [-1] * self.num_node
        parent[self.center] = self.center
        todo = deque([self.center])
        while todo:
            i = todo.popleft()
            for j in adj[i]:
                if parent[j] < 0:
                    parent[j] = i
                    todo.append(j)
        # joints not connected to the centre are their own parent (zero bone)
        return tuple(p if p >= 0 else v for v, p in enumerate(parent))

    @property
    def bone_pairs(self):
        """(joint, parent) pairs, 1-based, in the format of the reference bone-stream lists."""
        return [(v + 1, p + 1) for v, p in enumerate(self.parents)]


def _zero_based(pairs):
    return tuple((i - 1, j - 1) for i, j in pairs)


def _groups(groups):
    return tuple(tuple(j - 1 for j in g) for g in groups)


# NTU RGB+D (Kinect v2), 1-based joint order:
# 1 spine base, 2 spine mid, 3 neck, 4 head, 5-8 left shoulder/elbow/wrist/hand, 9-12 right arm,
# 13-16 left hip/knee/ankle/foot, 17-20 right leg, 21 spine shoulder, 22/23 left hand tip/thumb,
# 24/25 right hand tip/thumb.
NTU_EDGES_1BASED = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21),
                    (10, 9), (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1),
                    (18, 17), (19, 18), (20, 19), (22, 23), (23, 8), (24, 25), (25, 12)]

NTU_RGBD = Layout(
    name='ntu-rgb+d', num_node=25, edges=_zero_based(NTU_EDGES_1BASED), center=21 - 1,
    shoulders=(5 - 1, 9 - 1),
    flip=(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22),
    parts=_groups([(1, 2, 21), (3, 4), (5, 6), (7, 8), (22, 23), (9, 10), (11, 12), (24, 25),
                   (13, 14), (15, 16), (17, 18), (19, 20)]),
    bodies=_groups([(1, 2, 3, 4, 21), (5, 6, 7, 8, 22, 23), (9, 10, 11, 12, 24, 25),
                    (13, 14, 15, 16), (17, 18, 19, 20)]),
    # GAP's NTU part lists (model/ctrgcn.py, Model_lst_4part), 0-based
    text_parts=(('head', (2, 3, 20)), ('hands', (4, 5, 6, 7, 8, 9, 10, 11, 21, 22, 23, 24)),
                ('hips', (0, 1, 2, 12, 16)), ('feet', (12, 13, 14, 15, 16, 17, 18, 19))),
)

# NW-UCLA (Kinect v1), 20 joints in the order of the first 20 NTU joints, except that joint 3 is the
# shoulder centre (NTU's joint 21 role); edges as in the CTR-GCN `ucla` graph.
UCLA_EDGES_1BASED = [(1, 2), (2, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9),
                     (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17),
                     (19, 18), (20, 19)]

NW_UCLA = Layout(
    name='nw-ucla', num_node=20, edges=_zero_based(UCLA_EDGES_1BASED), center=3 - 1,
    shoulders=(5 - 1, 9 - 1),
    flip=(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15),
    parts=_groups([(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
                   (17, 18), (19, 20)]),
    bodies=_groups([(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16),
                    (17, 18, 19, 20)]),
    # GAP's NW-UCLA part lists (model/ctrgcn.py, Model_lst_4part_ucla), 0-based
    text_parts=(('head', (2, 3)), ('hands', (4, 5, 6, 7, 8, 9, 10, 11)), ('hips', (0, 1, 12, 16)),
                ('feet', (12, 13, 14, 15, 16, 17, 18, 19))),
)

# OpenPose 18 keypoints (0 nose, 1 neck, 2-4 right arm, 5-7 left arm, 8-10 right leg,
# 11-13 left leg, 14/15 right/left eye, 16/17 right/left ear), edges as in ST-GCN.
OPENPOSE = Layout(
    name='openpose', num_node=18,
    edges=((4, 3), (3, 2), (7, 6), (6, 5), (13, 12), (12, 11), (10, 9), (9, 8), (11, 5), (8, 2),
           (5, 1), (2, 1), (0, 1), (15, 0), (14, 0), (17, 15), (16, 14)),
    center=1, shoulders=(5, 2),
    flip=(0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16),
    parts=((0, 14, 15), (1, 16, 17), (2, 3, 4), (5, 6, 7), (8, 9, 10), (11, 12, 13)),
    bodies=((0, 1, 14, 15, 16, 17), (2, 3, 4), (5, 6, 7), (8, 9, 10), (11, 12, 13)),
)

LAYOUTS = {layout.name: layout for layout in (NTU_RGBD, NW_UCLA, OPENPOSE)}


# left/right words of joint names and their mirror words (``l_elbow`` / ``r_elbow``, ``LeftKnee``)
SIDES = {'left': 'right', 'right': 'left', 'l': 'r', 'r': 'l'}
LAYOUT_FILE_EXTENSIONS = ('.yaml', '.yml', '.json')


def name_tokens(name):
    """Lower-case words of a joint name: 'LeftElbow', 'left_elbow', 'l-elbow', 'elbow.L' ->
    ('left', 'elbow') / ('l', 'elbow') / ('elbow', 'l'); a leading 'left'/'right' glued to a
    word ('leftelbow') is split off."""
    text = re.sub(r'([a-z0-9])([A-Z])', r'\1 \2', str(name))
    text = re.sub(r'([A-Z])([A-Z][a-z])', r'\1 \2', text)
    tokens = []
    for token in re.split(r'[^A-Za-z0-9]+', text.lower()):
        match = re.fullmatch(r'(left|right)?(.*)', token)
        tokens.extend(t for t in match.groups() if t)
    return tuple(tokens)


def derive_flip(joint_names):
    """The left/right mirror permutation from joint names -> ``(flip, None)``, or ``(None, reason)`` when
    no name has a side or a sided joint has no mirror joint."""
    keys = [name_tokens(n) for n in joint_names]
    where = {key: i for i, key in enumerate(keys)}
    flip, sided = [], 0
    for i, key in enumerate(keys):
        if not any(t in SIDES for t in key):
            flip.append(i)
            continue
        sided += 1
        mirror = tuple(SIDES.get(t, t) for t in key)
        if mirror not in where:
            return None, (f"joint {i} ({quote(joint_names[i])}) has no mirror joint among the joint_names "
                          f"(looked for {quote('_'.join(mirror))})")
        flip.append(where[mirror])
    if not sided:
        return None, 'no joint name has a side in it (left/right, l_/r_)'
    return tuple(flip), None


def derive_shoulders(joint_names):
    """(left, right) shoulder joints from names such as 'left_shoulder' / 'ShoulderRight', or None."""
    found = {}
    for i, name in enumerate(joint_names):
        key = name_tokens(name)
        if 'shoulder' in key:
            for side in ('left', 'right'):
                if side in key or side[0] in key:
                    found.setdefault(side, []).append(i)
    if len(found.get('left', ())) == 1 and len(found.get('right', ())) == 1:
        return found['left'][0], found['right'][0]
    return None


def is_layout_path(spec):
    return isinstance(spec, str) and (spec.lower().endswith(LAYOUT_FILE_EXTENSIONS) or os.sep in spec
                                      or os.path.isfile(spec))


def load_layout_file(path) -> Layout:
    """A layout from a YAML (or JSON) file holding the fields of a custom layout (docs/DATA.md)."""
    if not os.path.isfile(path):
        raise ValueError(f"layout file '{path}' does not exist (a layout is a name: {', '.join(sorted(LAYOUTS))}, "
                         "a path to a layout file, or a dict; see docs/DATA.md, 'Layout files')")
    fields = load_yaml(path, 'layout file')
    if not isinstance(fields, dict):
        raise ValueError(f"layout file '{path}' must hold a mapping of layout keys (num_node, edges, center, ...), "
                         f"got {type(fields).__name__}")
    fields.setdefault('name', os.path.splitext(os.path.basename(path))[0])
    try:
        return layout_from_dict(fields)
    except ValueError as e:
        raise ValueError(f"layout file '{path}': {e}") from None


def get_layout(spec) -> Layout:
    """A layout by name (``'ntu-rgb+d'``, ``'nw-ucla'``, ``'openpose'``), a Layout, the path of a layout
    file (``.yaml``), or a dict of its fields (a custom layout given in YAML; lists are accepted where
    tuples are stored)."""
    if isinstance(spec, Layout):
        return spec
    if isinstance(spec, str):
        if spec in LAYOUTS:
            return LAYOUTS[spec]
        if is_layout_path(spec):
            return load_layout_file(spec)
        raise ValueError(f"unknown skeleton layout '{spec}'; known layouts: {', '.join(sorted(LAYOUTS))}, "
                         "or give the path of a layout file (.yaml) or a dict with num_node, edges and center")
    if isinstance(spec, dict):
        return layout_from_dict(spec)
    raise ValueError(f"a skeleton layout must be a name, a layout file path or a dict, got {type(spec).__name__}")


def layout_from_dict(spec) -> Layout:
    """A custom layout from a dict of its fields (the body of a layout file)."""
    fields = dict(spec)
    keys = [k for k in fields if not isinstance(k, str)]
    if keys:
        raise ValueError(f'a custom layout: key {quote(keys[0])} is not a name (num_node, edges, center, ...)')
    fields.setdefault('name', 'custom')
    name = fields['name']
    if not isinstance(name, str):
        raise ValueError(f'a custom layout: name must be a text, got {quote(name)}')
    for key in NAME_KEYS:
        if fields.get(key) is not None:
            names = fields[key]
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, int)) and str(n).strip()
                                                               for n in names):
                raise ValueError(f"custom layout '{name}': {key} must be a list of non-empty names, got {quote(names)}")
            fields[key] = tuple(str(n) for n in names)
    joint_names = fields.get('joint_names')
    if 'num_node' not in fields and joint_names is not None:
        fields['num_node'] = len(joint_names)
    missing = [k for k in ('num_node', 'edges', 'center') if k not in fields]
    if missing:
        raise ValueError(f"custom layout '{name}' lacks the key(s) {', '.join(missing)}")
    by_name = {n: i for i, n in enumerate(joint_names or ())}

    def index(value, what):
        """A joint index: an integer (a float with a fraction is an error, not truncated), or a joint
        name from joint_names."""
        if isinstance(value, str) and by_name:
            if value not in by_name:
                raise ValueError(f"custom layout '{name}': {what} {quote(value)} is not one of the joint_names")
            return by_name[value]
        if isinstance(value, bool) or not (isinstance(value, numbers.Integral) or
                                           (isinstance(value, float) and value.is_integer())):
            raise ValueError(f"custom layout '{name}': {what} must be an integer"
                             f"{' or a joint name' if by_name else ''}, got {quote(value)}")
        return int(value)
    if isinstance(fields['num_node'], str):
        raise ValueError(f"custom layout '{name}': num_node must be an integer, got {quote(fields['num_node'])}")
    fields['num_node'] = index(fields['num_node'], 'num_node')
    if fields['num_node'] <= 0:
        raise ValueError(f"custom layout '{name}': num_node must be positive, got {fields['num_node']}")
    fields['center'] = index(fields['center'], 'center')
    if fields.get('origin') is not None:
        fields['origin'] = index(fields['origin'], 'origin')
    for key in ('edges', 'parts', 'bodies'):
        if key in fields:
            groups = fields[key]
            if not isinstance(groups, (list, tuple)) or not all(isinstance(g, (list, tuple)) for g in groups):
                raise ValueError(f"custom layout '{name}': {key} must be a list of lists of joint indices, "
                                 f"got {quote(groups)}")
            if key == 'edges':
                bad = next((g for g in groups if len(g) != 2), None)
                if bad is not None:
                    raise ValueError(f"custom layout '{name}': every edge must be a pair [i, j], got {quote(list(bad))}")
            fields[key] = tuple(tuple(index(j, f'{key} entry') for j in g) for g in groups)
    if fields.get('text_parts') is not None:
        parts = fields['text_parts']
        if not isinstance(parts, dict) or not all(isinstance(g, (list, tuple)) and g for g in parts.values()):
            raise ValueError(f"custom layout '{name}': text_parts must map a described part (head, hands, hips, "
                             f"feet) to a non-empty list of joints, got {quote(parts)}")
        fields['text_parts'] = tuple((str(k), tuple(index(j, f'text_parts.{k} entry') for j in g))
                                     for k, g in parts.items())
    for key in ('flip', 'shoulders'):
        if fields.get(key) is not None:
            if not isinstance(fields[key], (list, tuple)):
                raise ValueError(f"custom layout '{name}': {key} must be a list of joint indices, got "
                                 f"{quote(fields[key])}")
            fields[key] = tuple(index(j, f'{key} entry') for j in fields[key])
    if joint_names is not None:
        if fields.get('flip') is None:
            fields['flip'] = derive_flip(joint_names)[0]
        if fields.get('shoulders') is None:
            fields['shoulders'] = derive_shoulders(joint_names)
    known = set(Layout.__dataclass_fields__)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"custom layout '{name}': unknown key(s) {', '.join(unknown)}; "
                         f"valid keys: {', '.join(sorted(known))}")
    return Layout(**fields)


def flip_problem(layout) -> str:
    """Why ``layout`` has no ``flip``: what to add (for the augmentation preflight)."""
    if layout.joint_names is None:
        return 'it has no flip and no joint_names to derive one from'
    return f'it has no flip and none can be derived from its joint_names: {derive_flip(layout.joint_names)[1]}'
