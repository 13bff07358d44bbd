"""Continuous recordings + a segment table -> clips (tools/segments.py through tools/custom_gendata.py
--recordings/--segments; docs/DATA.md, "Continuous recordings"): the worked example of the guide in a foreign
file form (a frame id, then the joints, one skeleton a row, ids repeating), run as written there; the rules
for repeated ids, gaps, inclusive ends, skipped segments and several skeletons, value by value."""
import argparse
import os
import re
import shlex

import numpy as np
import pytest

from conftest import ROOT, one_line
from test_bad_inputs import run_cli
from tools import custom_gendata
from tools.segments import cut_recordings

GUIDE = os.path.join(ROOT, 'docs', 'DATA.md')


def guide_block():
    """The section's example: the bash command and the segment CSV, as written."""
    text = open(GUIDE, encoding='utf-8').read()
    start = text.index('### Continuous recordings')
    section = text[start:text.index('\n### ', start + 1)]
    command = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
    table = re.search(r'```\n(recording,label,start,end.*?)```', section, re.S).group(1)
    return shlex.split(re.sub(r'\\\n\s*', ' ', command).strip()), table


def skeleton(rng, offset=0.0):
    """A 20-joint standing skeleton (metres, y up) with a little noise."""
    base = np.stack([np.zeros(20), np.linspace(0.1, 1.7, 20), np.full(20, 2.5)], axis=1)
    base[:, 0] += np.tile([-0.2, 0.2], 10) + offset
    return base + rng.normal(0, 0.01, base.shape)


def write_recording(path, frames, rng, repeat=(), gap=(), second_person=False):
    """The foreign form: ``<frame id> x1 y1 z1 ... x20 y20 z20`` a row; ids in ``repeat`` written twice (a
    refitted skeleton 2 cm off), ids in ``gap`` not written; ``second_person``: every id twice, 1 m apart."""
    rows, truth = [], {}
    for frame in frames:
        if frame in gap:
            continue
        body = skeleton(rng)
        rows.append([frame, *body.ravel()])
        truth[frame] = [body]
        if frame in repeat or second_person:
            other = body + (np.array([1.0, 0, 0]) if second_person else rng.normal(0, 0.02, body.shape))
            rows.append([frame, *other.ravel()])
            truth[frame].append(other)
    np.savetxt(path, np.array(rows), fmt='%.5f')
    return truth


@pytest.fixture(scope='module')
def recordings(tmp_path_factory):
    """The guide's input: 4 recordings (2 subjects x 2 takes) of frame ids 250-700, the segment table of the
    guide (which skips one NaN row), ids repeated and a gap in every recording."""
    folder = tmp_path_factory.mktemp('rec')
    (folder / 'raw' / 'joints').mkdir(parents=True)
    rng = np.random.RandomState(0)
    truth = {}
    for subject in ('s01', 's02'):
        for take in ('e01', 'e02'):
            name = f'joints_{subject}_{take}'
            truth[name] = write_recording(folder / 'raw' / 'joints' / f'{name}.txt', range(250, 701), rng,
                                          repeat=range(260, 700, 9), gap=(300, 301, 302))
    _, table = guide_block()
    (folder / 'raw' / 'segments.csv').write_text(table)
    return folder, truth


def test_the_guide_example_runs_as_written(recordings, monkeypatch, capsys):
    folder, _ = recordings
    monkeypatch.chdir(folder)
    argv, table = guide_block()
    assert argv[:2] == ['python', 'tools/custom_gendata.py']
    custom_gendata.main(argv[2:] + ['--no-progress'])
    report = capsys.readouterr().out
    rows = [line for line in table.splitlines()[1:] if line.strip()]
    skipped = [line for line in rows if 'NaN' in line or ',,' in line]
    assert skipped                                                    # the guide shows a skipped row
    one_line(re.search(r'segments: .*', report).group(0), f'{len(rows)} in the table',
             f'{len(rows) - len(skipped)} cut from 4 recordings', 'end frame included', f'{len(skipped)} skipped',
             'no start or end')
    one_line(re.search(r'frame ids: .*', report).group(0), '--repeated-ids mean', '12 frames missing in gaps')
    assert 'NOTICE: rows of one frame id' not in report                # 2 cm apart: one skeleton
    names, labels = np.load(folder / 'data' / 'myrec' / 'train_label.pkl', allow_pickle=True)
    val_names, _ = np.load(folder / 'data' / 'myrec' / 'val_label.pkl', allow_pickle=True)
    assert all('_s01_' in n for n in names) and all('_s02_' in n for n in val_names)    # --split-by subject
    assert len(names) + len(val_names) == len(rows) - len(skipped)
    assert 'size advice for the' in report and '--batch_size' in report


def close(a, b):
    return np.allclose(a, b, atol=1e-4)             # the recordings are written with 5 decimals


def cut(folder, segments, **options):
    args = argparse.Namespace(recordings=str(folder), segments=str(segments), fps=None, frame_column=0,
                              repeated_ids='mean', segment_end='inclusive', text_rows='frame', columns=None)
    vars(args).update(options)
    return cut_recordings(args, 20, custom_gendata.read_text_rows, custom_gendata.text_clip)


def test_the_rules_value_by_value(tmp_path):
    rng = np.random.RandomState(1)
    truth = write_recording(tmp_path / 'r.txt', range(10, 40), rng, repeat=(12, 20), gap=(25, 26))
    (tmp_path / 's.csv').write_text('recording,label,start,end\nr,a,12,30\nr,b,5,14\nr,c,,14\nr,d,35,31\n'
                                    'r,e,50,60\nr,f,nan,12\n')
    rows, clips, lines = cut(tmp_path, tmp_path / 's.csv')
    assert [r['name'] for r in rows] == ['r_0', 'r_1'] and [r['label'] for r in rows] == ['a', 'b']
    a = clips['r_0']                                                  # (3, T, V, M), frames 12..30 inclusive
    assert a.shape == (3, 19, 20, 1)
    assert close(a[:, 0, :, 0].T, np.mean(truth[12], axis=0))   # frame 12: the mean of its two rows
    assert close(a[:, 1, :, 0].T, truth[13][0])
    assert np.isnan(a[:, 25 - 12]).all() and np.isnan(a[:, 26 - 12]).all()    # the gap: missing frames
    assert clips['r_1'].shape[1] == 5                                 # 5..14 cut at the recording's first id, 10
    one_line(lines[0], '6 in the table', '2 cut from 1 recordings', '4 skipped', '2 no start or end',
             '1 end before start', '1 no frame of its recording inside it', "1 cut at its recording's first")
    one_line(lines[1], '2 repeated', '2 frames missing in gaps')
    # exclusive ends, the first / last rules
    rows, clips, _ = cut(tmp_path, tmp_path / 's.csv', segment_end='exclusive', repeated_ids='last')
    assert clips['r_0'].shape[1] == 18 and close(clips['r_0'][:, 0, :, 0].T, truth[12][1])
    _, clips, _ = cut(tmp_path, tmp_path / 's.csv', repeated_ids='first')
    assert close(clips['r_0'][:, 0, :, 0].T, truth[12][0])
    # times: ids in seconds at 10 frames/s
    times = np.loadtxt(tmp_path / 'r.txt')
    times[:, 0] /= 10.0
    np.savetxt(tmp_path / 't.txt', times, fmt='%.5f')
    (tmp_path / 't.csv').write_text('recording,label,start,end\nt,a,1.2,3.0\n')
    _, clips, _ = cut(tmp_path, tmp_path / 't.csv', fps=10)
    assert clips['t_0'].shape[1] == 19 and close(clips['t_0'][:, 0, :, 0].T, np.mean(truth[12], axis=0))
    with pytest.raises(ValueError, match='frame ids are not integers.*--fps'):
        cut(tmp_path, tmp_path / 't.csv')


def test_two_people_under_one_frame_id(tmp_path):
    """Rows of one id 1 m apart: averaged they would be one body between two people, so the report says so;
    --repeated-ids persons keeps them as persons 0 and 1."""
    rng = np.random.RandomState(2)
    truth = write_recording(tmp_path / 'two.txt', range(0, 20), rng, second_person=True)
    (tmp_path / 's.csv').write_text('recording,label,start,end\ntwo,push,0,19\n')
    _, clips, lines = cut(tmp_path, tmp_path / 's.csv')
    assert clips['two_0'].shape[-1] == 1 and any(line.startswith('NOTICE: rows of one frame id') for line in lines)
    _, clips, lines = cut(tmp_path, tmp_path / 's.csv', repeated_ids='persons')
    assert clips['two_0'].shape == (3, 20, 20, 2) and not any('NOTICE' in line for line in lines)
    assert close(clips['two_0'][:, 3, :, 1].T, truth[3][1])


def test_bad_recordings_are_one_line_errors(tmp_path):
    (tmp_path / 'rec').mkdir()
    np.savetxt(tmp_path / 'rec' / 'r.txt', np.arange(61 * 3, dtype=float).reshape(3, 61))
    (tmp_path / 's.csv').write_text('recording,label,start,end\nr,a,0,1\nmissing,a,0,5\n')
    args = ['--recordings', str(tmp_path / 'rec'), '--segments', str(tmp_path / 's.csv'), '--layout', 'nw-ucla',
            '--out', str(tmp_path / 'out'), '--val-fraction', '0.5']
    one_line(run_cli(*args, script='tools/custom_gendata.py'), "recording 'missing' has no file", 'line 3')
    (tmp_path / 's.csv').write_text('recording,label,begin,end\nr,a,0,1\n')
    one_line(run_cli(*args, script='tools/custom_gendata.py'), 'must name the columns recording, label, start, end',
             'missing start')
    assert not (tmp_path / 'out').exists()


def test_segment_tables_and_npy_recordings_are_read_through_the_reader_layer(tmp_path):
    """A non-UTF-8 segment table and a pickled .npy recording are one line naming the file (torchlight/readers)."""
    from tools.segments import read_recording, read_segments
    table = tmp_path / 'segments.csv'
    table.write_bytes(b'recording,label,start,end\nr1,caf\xe9,0,9\n')
    with pytest.raises(ValueError, match=r"segment table '.*segments.csv': not UTF-8 text \(byte 0xe9 on line 2"):
        read_segments(str(table))
    recording = tmp_path / 'r1.npy'
    np.save(recording, np.array([{'a': 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"recording file '.*r1.npy'"):
        read_recording(str(recording), 20, None, None)
