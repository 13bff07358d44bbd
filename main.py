#!/usr/bin/env python
"""Entry point: ``python main.py <processor> --config <file.yaml> [--key value ...]``."""
import argparse
import signal
import sys

from processor import PROCESSORS
from torchlight import distributed
from torchlight.io import UserError, import_class


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
    processor_class = import_class(PROCESSORS[name])
    if '-h' in rest or '--help' in rest:
        processor_class.get_parser(add_help=True).parse_args(['--help'])
    try:
        try:
            processor = processor_class(rest)
        except ValueError as e:
            # while the processor is being set up, a ValueError is a problem with the configuration or
            # data (models and feeders check their arguments with ValueError), not a bug
            raise UserError(str(e)) from e
        processor.start()
    except UserError as e:
        print(f"error: {' '.join(str(e).splitlines())}", file=sys.stderr)
        distributed.shutdown(wait=False)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C before the training loop installed its handler (set-up, data loading): nothing to save
        print('error: interrupted (SIGINT) before training started; nothing was saved', file=sys.stderr)
        distributed.shutdown(wait=False)
        return 128 + signal.SIGINT
    processor.data_loader.clear()        # stop the DataLoader workers before leaving the process group
    distributed.shutdown()
    # 128 + signal number after a SIGTERM / SIGINT stop (latest.pt saved), so job scripts see the stop
    return getattr(processor, 'exit_status', 0)


if __name__ == '__main__':
    sys.exit(main())
