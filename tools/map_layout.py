"""A converted dataset in another skeleton layout, joint by joint name (feeder/layout_map.py): the input of an
encoder pretrained on a dataset with that layout (docs/DATA.md, "An encoder pretrained on another dataset").

    python tools/map_layout.py data/mydata --from kinect_v1.yaml --to ntu-rgb+d --out data/mydata_as_ntu
    python tools/map_layout.py data/synthetic --from ntu-rgb+d --to nw-ucla --out data/synthetic_as_ucla

Reads ``<folder>/{train,val}_position.npy`` and ``_label.pkl`` (and ``dataset.yaml`` when there is one), writes
the same files into ``--out`` with the joints of the target layout (copied where the source has them,
synthesised from their neighbours where it has not), ``dataset.yaml`` with the target layout, and
``report.txt``: how each target joint was made and the ridge floor of the mapped arrays (tools/floor.py).
"""
import argparse
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from feeder.layout_map import describe, map_clips, plan_mapping  # noqa: E402
from net.text_features import DATASET_INFO  # noqa: E402
from net.utils.layouts import LAYOUTS, get_layout  # noqa: E402
from tools.floor import dataset_baselines, floor_line  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import StagedFiles, UserError, atomic_write, run_tool  # noqa: E402
from torchlight.readers import load_npy, load_yaml_mapping  # noqa: E402


def map_dataset(folder, source, target, out):
    """Write the mapped copy of ``folder`` into ``out``; -> the report's lines."""
    if os.path.abspath(folder) == os.path.abspath(out):
        raise UserError(f"--out '{out}' is the input folder: write the mapped copy elsewhere")
    try:
        steps = plan_mapping(source, target)
    except ValueError as e:
        raise UserError(str(e)) from None
    source_name, target_name = get_layout(source).name, get_layout(target).name
    arrays = {}
    for split in ('train', 'val'):
        path = os.path.join(folder, f'{split}_position.npy')
        if not os.path.isfile(path) or not os.path.isfile(os.path.join(folder, f'{split}_label.pkl')):
            raise UserError(f"'{folder}' has no {split}_position.npy / {split}_label.pkl: convert the dataset first "
                            '(docs/DATA.md)')
        data = load_npy(path, 'data file', dims='N, C, T, V, M', kinds='f')
        try:
            arrays[split] = map_clips(np.asarray(data), source, target)
        except ValueError as e:
            raise UserError(f'{path}: {e}') from None
    info = {}
    info_path = os.path.join(folder, DATASET_INFO)
    if os.path.isfile(info_path):
        info = load_yaml_mapping(info_path, 'dataset file')
    info.update(layout=target if isinstance(target, str) else target_name, num_joint=len(steps),
                mapped_from={'folder': folder, 'layout': source if isinstance(source, str) else source_name})
    os.makedirs(out, exist_ok=True)
    made = [f'{name} = {describe(step)}' for name, step in steps if step[0] != 'copy']
    lines = [f"{out}: {folder} in layout '{target_name}' ({len(steps)} joints) from '{source_name}': "
             f"{len(steps) - len(made)} joints copied, {len(made)} synthesised" + (': ' + '; '.join(made) if made else '')]
    with StagedFiles() as staged:
        for split, mapped in arrays.items():
            np.save(staged.path(os.path.join(out, f'{split}_position.npy')), mapped.astype(np.float32))
            shutil.copyfile(os.path.join(folder, f'{split}_label.pkl'),
                            staged.path(os.path.join(out, f'{split}_label.pkl')))
        with open(staged.path(os.path.join(out, DATASET_INFO)), 'w', encoding='utf-8') as f:
            yaml.safe_dump(info, f, sort_keys=False)
    lines.append(floor_line(dataset_baselines(out)))
    atomic_write(os.path.join(out, 'report.txt'), lambda f: f.write('\n'.join(lines) + '\n'), mode='w')
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folder', type=options.input_folder, help='a converted dataset folder ({train,val}_position.npy, _label.pkl)')
    parser.add_argument('--from', dest='source', type=options.input_file_or_name(LAYOUTS), required=True, help="the folder's layout (a name or a layout file)")
    parser.add_argument('--to', dest='target', type=options.input_file_or_name(LAYOUTS), required=True,
                        help="the pretrained encoder's layout (a name or a layout file)")
    parser.add_argument('--out', type=options.output_folder, required=True, help='output folder')
    args = parser.parse_args(argv)
    for layout in (args.source, args.target):
        try:
            get_layout(layout)
        except ValueError as e:
            raise UserError(str(e)) from None
    lines = map_dataset(args.folder, args.source, args.target, args.out)
    print('\n'.join(lines))
    return lines


if __name__ == '__main__':
    run_tool(main)
