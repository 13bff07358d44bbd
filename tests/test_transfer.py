"""Transfer from a set with another skeleton (feeder/layout_map.py, tools/map_layout.py; docs/DATA.md, "An
encoder pretrained on another dataset"): joints mapped by name between NTU-25, Kinect-v1 / NW-UCLA-20 and
OpenPose-18, missing ones synthesised from their neighbours, and the documented path: map the target clips
into the pretrained encoder's layout, then the usual probe with --weights set to the pretraining work_dir."""
import os
import re

import numpy as np
import pytest
import yaml

import main as main_module
from conftest import ROOT, one_line
from feeder.layout_map import CANONICAL, canonical_names, map_clips, plan_mapping
from net.utils.layouts import get_layout
from test_bad_inputs import run_cli
from tools import gen_synthetic, map_layout

LAYOUTS = ('ntu-rgb+d', 'nw-ucla', 'openpose')


def joints(layout, n=3, T=4, M=1, seed=0):
    """Random clips (n, 3, T, V, M) of ``layout`` with no zero joint."""
    return np.random.RandomState(seed).uniform(0.1, 1.0, (n, 3, T, len(CANONICAL[layout]), M)).astype(np.float32)


def column(data, layout, name):
    return data[:, :, :, canonical_names(layout).index(name)]


@pytest.mark.parametrize('source', LAYOUTS)
@pytest.mark.parametrize('target', LAYOUTS)
def test_every_pair_maps_every_joint_and_copies_the_shared_ones(source, target):
    data = joints(source)
    mapped = map_clips(data, source, target)
    assert mapped.shape == data.shape[:3] + (get_layout(target).num_node,) + data.shape[4:]
    assert np.isfinite(mapped).all() and (mapped != 0).all()
    shared = set(canonical_names(source)) & set(canonical_names(target))
    assert len(shared) >= 12                                          # arms, legs, shoulder centre at least
    for name in shared:
        assert np.array_equal(column(mapped, target, name), column(data, source, name)), name


def test_the_synthesis_rules():
    ucla = joints('nw-ucla')
    ntu = map_clips(ucla, 'nw-ucla', 'ntu-rgb+d')
    neck = (column(ucla, 'nw-ucla', 'shoulder_center') + column(ucla, 'nw-ucla', 'head')) / 2
    assert np.allclose(column(ntu, 'ntu-rgb+d', 'neck'), neck)
    hand, wrist = column(ucla, 'nw-ucla', 'hand_left'), column(ucla, 'nw-ucla', 'wrist_left')
    assert np.allclose(column(ntu, 'ntu-rgb+d', 'hand_tip_left'), hand + (hand - wrist))
    assert np.array_equal(column(ntu, 'ntu-rgb+d', 'thumb_right'), column(ucla, 'nw-ucla', 'hand_right'))
    pose = joints('openpose')
    from_pose = map_clips(pose, 'openpose', 'ntu-rgb+d')
    hips = (column(pose, 'openpose', 'hip_left') + column(pose, 'openpose', 'hip_right')) / 2
    assert np.allclose(column(from_pose, 'ntu-rgb+d', 'hip_center'), hips)
    assert np.allclose(column(from_pose, 'ntu-rgb+d', 'spine'), (hips + column(pose, 'openpose', 'shoulder_center')) / 2)
    elbow, wrist = column(pose, 'openpose', 'elbow_right'), column(pose, 'openpose', 'wrist_right')
    assert np.allclose(column(from_pose, 'ntu-rgb+d', 'hand_right'), wrist + 0.3 * (wrist - elbow))
    # the origin of the 50-frame step is the shoulder centre in all three layouts: mapped arrays stay centred
    for layout in LAYOUTS:
        assert canonical_names(layout)[get_layout(layout).origin_joint] == 'shoulder_center'
    # a joint missing in a frame (all zero) is missing in what is made from it
    ucla[0, :, 1, canonical_names('nw-ucla').index('head')] = 0
    assert (column(map_clips(ucla, 'nw-ucla', 'ntu-rgb+d'), 'ntu-rgb+d', 'neck')[0, :, 1] == 0).all()


def test_layout_files_map_by_their_joint_names(tmp_path):
    """The guide's Kinect-v1 layout file (Kinect SDK names) is NW-UCLA's joint order; OpenPose-style names
    (LShoulder, REye) and the example's (l_shoulder, pelvis) are read too."""
    guide = open(os.path.join(ROOT, 'docs', 'DATA.md'), encoding='utf-8').read()
    block = re.search(r'```yaml\n(# layouts/kinect_v1.yaml.*?)```', guide, re.S).group(1)
    (tmp_path / 'kinect_v1.yaml').write_text(block)
    assert canonical_names(str(tmp_path / 'kinect_v1.yaml')) == CANONICAL['nw-ucla']
    assert [step for _, step in plan_mapping(str(tmp_path / 'kinect_v1.yaml'), 'nw-ucla')] == \
        [('copy', i) for i in range(20)]
    names = ['Nose', 'Neck', 'RShoulder', 'LShoulder', 'REye', 'pelvis', 'l_hip', 'r_hip']
    (tmp_path / 'mine.yaml').write_text(yaml.safe_dump({'joint_names': names, 'edges': [[0, 1]], 'center': 1}))
    assert canonical_names(str(tmp_path / 'mine.yaml')) == (
        'nose', 'neck', 'shoulder_right', 'shoulder_left', 'eye_right', 'hip_center', 'hip_left', 'hip_right')
    with pytest.raises(ValueError, match="gives the target joint 'elbow_left'"):
        plan_mapping(str(tmp_path / 'mine.yaml'), 'nw-ucla')


def test_the_transfer_path_runs(tmp_path, monkeypatch, capsys):
    """An encoder pretrained on one skeleton (1 epoch on NW-UCLA-shaped clips), the target set in NTU's 25
    joints mapped into its layout by the tool, then the small-data probe with --weights set to the
    pretraining work_dir (its last checkpoint), beside the untrained encoder."""
    monkeypatch.chdir(tmp_path)
    gen_synthetic.main(['--out-folder', 'ntu', '--num-train-per-class', '6', '--num-val-per-class', '2'])
    lines = map_layout.main(['ntu', '--from', 'ntu-rgb+d', '--to', 'nw-ucla', '--out', 'ntu_as_ucla'])
    one_line(lines[0], "layout 'nw-ucla' (20 joints) from 'ntu-rgb+d'", '20 joints copied, 0 synthesised')
    assert lines[1].startswith('ridge floor of ntu_as_ucla (3 x 50 x 20 x 2')
    assert np.load('ntu_as_ucla/train_position.npy').shape == (60, 3, 50, 20, 2)
    assert yaml.safe_load(open('ntu_as_ucla/dataset.yaml'))['layout'] == 'nw-ucla'
    back = map_layout.main(['ntu_as_ucla', '--from', 'nw-ucla', '--to', 'ntu-rgb+d', '--out', 'back'])
    assert '5 synthesised: neck = mean(shoulder_center, head)' in back[0]
    feed = 'data_path=ntu_as_ucla/{0}_position.npy,label_path=ntu_as_ucla/{0}_label.pkl'
    common = ['--num_epoch', '1', '--progress_bar', 'false', '--model_args', 'hidden_channels=8']
    assert main_module.main(['pretrain_skeletonclr', '--config', os.path.join(ROOT, 'config/ucla/pretrain_skeletonclr.yaml'),
                             '--work_dir', 'pretext', '--train_feeder_args', feed.format('train'),
                             '--batch_size', '8', '--base_lr', '0.00625', '--model_args', 'queue_size=32', *common]) == 0
    probe = ['linear_evaluation', '--config', os.path.join(ROOT, 'config/ucla/linear_eval_skeletonclr.yaml'),
             '--train_feeder_args', feed.format('train'), '--test_feeder_args', feed.format('val'),
             '--batch_size', '8', '--weights_init', 'false', *common]
    assert main_module.main(probe + ['--work_dir', 'probe', '--weights', 'pretext']) == 0
    assert main_module.main(probe + ['--work_dir', 'untrained', '--weights', 'random']) == 0
    log = (tmp_path / 'probe' / 'log.txt').read_text()
    assert "'pretext' is a pretraining work_dir: its last epoch's checkpoint 'pretext/epoch1_model.pt'" in log
    assert 'Result: top-1' in log and 'Result: top-1' in (tmp_path / 'untrained' / 'log.txt').read_text()


def test_map_layout_errors_are_one_line(tmp_path):
    one_line(run_cli(str(tmp_path), '--from', 'nw-ucla', '--to', 'ntu-rgb+d', '--out', str(tmp_path / 'o'),
                     script='tools/map_layout.py'), 'has no train_position.npy')
    one_line(run_cli(str(tmp_path), '--from', 'kinect', '--to', 'ntu-rgb+d', '--out', str(tmp_path / 'o'),
                     script='tools/map_layout.py'), "argument --from: expected one of ntu-rgb+d, nw-ucla, openpose or an existing file, got 'kinect'")
