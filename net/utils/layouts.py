"""Skeleton layouts as data.

A layout names the joints of a skeleton and everything the code base needs to know about them:
the bones (graph edges), the centre joint of the ST-GCN spatial partition, the joint used as the
origin in preprocessing, the shoulder pair used to align the body, the left/right mirror permutation
(spatial flip augmentation), and the part- and body-level joint groups of multi-scale models (MsMCLR).

Adding a dataset means adding an entry to ``LAYOUTS`` (or passing the same fields as a dict in YAML,
``graph_args: {layout: {name: ..., num_node: ..., edges: ..., center: ...}}``); no code path changes.
All indices are 0-based.
"""
import numbers
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Tuple


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

    def __post_init__(self):
        def check(idx, what):
            if not 0 <= idx < self.num_node:
                raise ValueError(f"layout '{self.name}': {what} index {idx} is outside 0..{self.num_node - 1}")
        for i, j in self.edges:
            check(i, 'edge')
            check(j, 'edge')
        check(self.center, 'center')
        for group in self.parts + self.bodies:
            for j in group:
                check(j, 'group')
        if self.flip is not None and sorted(self.flip) != list(range(self.num_node)):
            raise ValueError(f"layout '{self.name}': flip must be a permutation of 0..{self.num_node - 1}")

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


def get_layout(spec) -> Layout:
    """A layout by name (``'ntu-rgb+d'``, ``'nw-ucla'``, ``'openpose'``), a Layout, or a dict of its
    fields (a custom layout given in YAML; lists are accepted where tuples are stored)."""
    if isinstance(spec, Layout):
        return spec
    if isinstance(spec, str):
        if spec not in LAYOUTS:
            raise ValueError(f"unknown skeleton layout '{spec}'; known layouts: {', '.join(sorted(LAYOUTS))}, "
                             "or give a dict with num_node, edges and center")
        return LAYOUTS[spec]
    if isinstance(spec, dict):
        fields = dict(spec)
        fields.setdefault('name', 'custom')
        missing = [k for k in ('num_node', 'edges', 'center') if k not in fields]
        if missing:
            raise ValueError(f"custom layout '{fields['name']}' lacks the key(s) {', '.join(missing)}")
        name = fields['name']

        def index(value, what):
            """A joint index: an integer (a float with a fraction or a string is an error, not truncated)."""
            if isinstance(value, bool) or not (isinstance(value, numbers.Integral) or
                                               (isinstance(value, float) and value.is_integer())):
                raise ValueError(f"custom layout '{name}': {what} must be an integer, got {value!r}")
            return int(value)
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
                                     f"got {groups!r}")
                if key == 'edges':
                    bad = next((g for g in groups if len(g) != 2), None)
                    if bad is not None:
                        raise ValueError(f"custom layout '{name}': every edge must be a pair [i, j], got {list(bad)!r}")
                fields[key] = tuple(tuple(index(j, f'{key} entry') for j in g) for g in groups)
        for key in ('flip', 'shoulders'):
            if fields.get(key) is not None:
                if not isinstance(fields[key], (list, tuple)):
                    raise ValueError(f"custom layout '{name}': {key} must be a list of joint indices, got "
                                     f"{fields[key]!r}")
                fields[key] = tuple(index(j, f'{key} entry') for j in fields[key])
        known = set(Layout.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"custom layout '{fields['name']}': unknown key(s) {', '.join(unknown)}; "
                             f"valid keys: {', '.join(sorted(known))}")
        return Layout(**fields)
    raise ValueError(f"a skeleton layout must be a name or a dict, got {type(spec).__name__}")
