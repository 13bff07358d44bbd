"""A dependency-free progress bar with rate and ETA, used by the training loop and the data tools."""
import sys
import time


def _fmt_seconds(s):
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f'{h:d}:{m:02d}:{sec:02d}' if h else f'{m:02d}:{sec:02d}'


class Progress:
    """Wraps an iterable (or counts ``total`` manual ``update()`` calls) and draws
    ``desc [#####.....] 12/50 ETA 00:31 loss 1.23`` on stderr.

    On a terminal the line is redrawn in place; otherwise (logs, CI) a line is written at most every
    ``min_interval`` seconds and at the end, so log files stay short."""

    def __init__(self, iterable=None, total=None, desc='', width=24, stream=None, min_interval=None,
                 enabled=True):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, '__len__'):
            total = len(iterable)
        self.total = total
        self.desc = desc
        self.width = width
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
        self.min_interval = min_interval if min_interval is not None else (0.1 if self.tty else 30.0)
        self.enabled = enabled
        self.n = 0
        self.postfix = ''
        self.start = time.time()
        self._last_draw = 0.0

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def set_postfix(self, text):
        self.postfix = text

    def update(self, n=1):
        self.n += n
        now = time.time()
        if now - self._last_draw >= self.min_interval:
            self._draw(now)

    def _draw(self, now, final=False):
        if not self.enabled:
            return
        self._last_draw = now
        elapsed = now - self.start
        if self.total:
            frac = min(self.n / self.total, 1.0)
            filled = int(frac * self.width)
            bar = '#' * filled + '.' * (self.width - filled)
            eta = elapsed / self.n * (self.total - self.n) if self.n else 0.0
            timing = f'{_fmt_seconds(elapsed)}' if final else f'ETA {_fmt_seconds(eta)}'
            line = f'{self.desc} [{bar}] {self.n}/{self.total} {timing}'
        else:
            line = f'{self.desc} {self.n} {_fmt_seconds(elapsed)}'
        if self.postfix:
            line += ' ' + self.postfix
        if self.tty:
            self.stream.write('\r' + line + ('\n' if final else ''))
        else:
            self.stream.write(line + '\n')
        self.stream.flush()

    def close(self):
        self._draw(time.time(), final=True)
