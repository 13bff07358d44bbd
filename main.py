#!/usr/bin/env python
"""Entry point: ``python main.py <processor> --config <file.yaml> [--key value ...]``."""
import sys

from torchlight.boundary import early, run_guarded

early(__name__)              # a Ctrl-C during the imports below is one line

import argparse  # noqa: E402

from processor import PROCESSORS  # noqa: E402
from torchlight import distributed  # noqa: E402
from torchlight.io import import_class  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description='Self-supervised skeleton action recognition',
                                     usage='python main.py <processor> --config <yaml> [--key value ...]')
    parser.add_argument('processor', choices=sorted(PROCESSORS), help='what to run')
    if not argv or argv[0] in ('-h', '--help'):
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in PROCESSORS:
        print(f"error: unknown processor '{name}'; choose from {', '.join(sorted(PROCESSORS))}", file=sys.stderr)
        return 2
    made = []

    def run():                 # bad input at set-up, training, evaluation, resume or saving: one line
        processor_class = import_class(PROCESSORS[name])
        if '-h' in rest or '--help' in rest:
            processor_class.get_parser(add_help=True).parse_args(['--help'])
        made.append(processor_class(rest, name=name))
        made[0].start()

    # Ctrl-C before the training loop installed its handler (set-up, data loading): nothing to save
    status = run_guarded(run, cleanup=lambda: close(made[0] if made else None, wait=False),
                         interrupted='interrupted (SIGINT) before training started; nothing was saved')
    if status:
        return status
    close(made[0])
    # 128 + signal number after a SIGTERM / SIGINT stop (latest.pt saved), so job scripts see the stop
    return made[0].exit_status


def close(processor, wait=True):
    """Stop the DataLoader workers, then leave the process group.  After an error (``wait=False``) a
    failure here is not reported over the error that brought us here."""
    try:
        if processor is not None and getattr(processor, 'data_loader', None) is not None:
            processor.data_loader.clear()
        distributed.shutdown(wait=wait)
    except Exception:
        if wait:
            raise


if __name__ == '__main__':
    sys.exit(main())
