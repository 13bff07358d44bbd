"""Recipe defaults: a processor's parser takes its protocol's values from the shipped base YAMLs, their one
home (``config/base/protocol/*.yaml``, ``config/base/supervised/``); the parsers themselves hold types,
ranges and neutral defaults only.  A leaf config that lists the same base gets the same values, so a parser
default cannot contradict a shipped base (``tests/test_config.py``)."""
import functools
import os

from torchlight.io import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRETRAIN = ('config/base/protocol/pretrain.yaml',)
KNN = ('config/base/protocol/knn.yaml',)
LINEAR = ('config/base/protocol/linear_eval.yaml',)
FINETUNE = ('config/base/protocol/finetune.yaml',)
SUPERVISED = ('config/base/supervised/common.yaml', 'config/base/supervised/recipe/ctrgcn_ntu.yaml')


@functools.lru_cache(maxsize=None)
def recipe(files):
    """The merged top-level values of ``files`` (their ``base:`` files resolved), later files winning."""
    values = {}
    for path in files:
        values.update(load_config_file(os.path.join(ROOT, path)))
    return values


def recipe_defaults(parser, files, keys=None):
    """Set ``parser``'s defaults to the recipe values of ``files`` (mappings such as feeder arguments are
    left to the configs); ``keys``: only these."""
    from processor.arguments import Arguments
    dests = {a.dest for a in parser._actions}
    chosen = {k: v for k, v in recipe(tuple(files)).items()
              if k in dests and not isinstance(v, dict) and (keys is None or k in keys)}
    Arguments.check_types(chosen, parser, ', '.join(files))
    parser.set_defaults(**chosen)
    return parser
