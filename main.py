#!/usr/bin/env python
"""Entry point: ``python main.py <processor> --config <file.yaml> [--key value ...]``."""
import argparse
import signal
import sys

from processor import PROCESSORS
from torchlight import distributed
from torchlight.boundary import EXPECTED_ERRORS, debugging, report
from torchlight.io import import_class


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
    processor = None
    try:
        processor_class = import_class(PROCESSORS[name])
        if '-h' in rest or '--help' in rest:
            processor_class.get_parser(add_help=True).parse_args(['--help'])
        processor = processor_class(rest, name=name)
        processor.start()
    except EXPECTED_ERRORS as e:         # bad input, at set-up, training, evaluation, resume or saving
        if debugging():
            raise
        close(processor, wait=False)
        return report(e)
    except KeyboardInterrupt:
        # Ctrl-C before the training loop installed its handler (set-up, data loading): nothing to save
        print('error: interrupted (SIGINT) before training started; nothing was saved', file=sys.stderr)
        close(processor, wait=False)
        return 128 + signal.SIGINT
    close(processor)
    # 128 + signal number after a SIGTERM / SIGINT stop (latest.pt saved), so job scripts see the stop
    return processor.exit_status


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
