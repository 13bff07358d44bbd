import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SHARED = os.path.join(os.path.dirname(ROOT), 'shared')
REALDATA = os.path.join(SHARED, 'realdata')


def require_realdata(*parts):
    """Path under ../shared/realdata, or skip the test with a message when it is absent."""
    path = os.path.join(REALDATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f'real data not found at {path} (../shared/realdata is needed for this test)')
    return path
