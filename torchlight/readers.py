"""The one reader layer: every file the project reads (configs, layouts, plans, descriptions, labels,
results, arrays, text clips, JSON) goes through these functions, so each check is stated once and every
failure is one ``UserError`` naming the file.

* text: decoded as UTF-8 (a BOM is accepted) with the file, byte, line and column named on failure;
* YAML (``parse_yaml`` / ``load_yaml``): the safe loader, a key given twice in one mapping refused
  (YAML would keep the last one silently), aliases bounded (``MAX_YAML_NODES`` nodes once expanded,
  ``MAX_YAML_DEPTH`` levels: a "billion laughs" bomb is refused in milliseconds, before anything walks,
  dumps or prints it);
* JSON: duplicate keys refused, nesting bounded;
* pickles: a restricted unpickler (plain data and NumPy arrays only: a crafted pickle runs no code);
* ``.npy``: the header is checked against the file's size before anything is allocated (a header that
  declares a billion frames is refused), an ``.npz`` archive where an ``.npy`` is expected is named as
  such, no object arrays, rank and dtype kind as the caller states them;
* ``.npz``: the arrays the caller names, no object arrays.

No torch import here (the tools import it lazily where they need it)."""
import json
import os
import pickle
import re
import zipfile

import yaml

from torchlight.boundary import UserError, describe, quote

MAX_YAML_NODES = 100_000       # nodes of a YAML document once its aliases are expanded
MAX_YAML_DEPTH = 64            # levels of nesting (aliases expanded)
MAX_JSON_DEPTH = 64


# ------------------------------------------------------------------------------------------------ text

def check_input(path, what='file'):
    """``path`` must name an existing file (not a folder): a one-line UserError otherwise."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise UserError(f'{what}: expected a file path, got {quote(path)}')
    if os.path.isdir(path):
        raise UserError(f"{what} '{path}' is a folder; give a file")
    if not os.path.exists(path):
        raise UserError(f"{what} '{path}' does not exist")


def read_bytes(path, what='file'):
    check_input(path, what)
    try:
        with open(path, 'rb') as f:
            return f.read()
    except (OSError, MemoryError) as e:
        raise UserError(f"{what} '{path}': {describe(e).split(': ', 1)[-1]}") from None


def decode(data, where):
    """UTF-8 bytes -> text; one line naming ``where``, the byte, line and column otherwise."""
    try:
        return data.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        start = e.start + (3 if data.startswith(b'\xef\xbb\xbf') else 0)
        line = data.count(b'\n', 0, start) + 1
        column = start - (data.rfind(b'\n', 0, start) + 1) + 1
        raise UserError(f"{where}: not UTF-8 text (byte 0x{data[start]:02x} on line {line}, column {column}); "
                        'save it as UTF-8') from None


def read_text(path, what='file'):
    """The whole text of ``path`` (UTF-8)."""
    return decode(read_bytes(path, what), f"{what} '{path}'")


_NEWLINE = re.compile(r'\r\n|\r|\n')


def read_lines(path, what='file'):
    """The lines of ``path`` without their ends (CRLF, CR and LF alike; no empty last line)."""
    text = read_text(path, what)
    lines = _NEWLINE.split(text)
    if lines and lines[-1] == '':
        lines.pop()
    return lines


# ------------------------------------------------------------------------------------------------ YAML

class YamlLimitError(yaml.YAMLError):
    """A YAML document whose aliases expand beyond the bounds, or that nests too deeply."""

    def __init__(self, problem, mark=None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


def expanded_size(node, limit_depth=MAX_YAML_DEPTH, limit_size=MAX_YAML_NODES):
    """(nodes, depth, mark) of a composed YAML node with its aliases expanded, computed without expanding
    them (each distinct node once); ``mark``: where the first node larger than ``limit_size`` starts (the
    smallest such node), else None.  A node that contains itself (a recursive alias) is refused."""
    sizes, busy, culprit = {}, set(), []

    def visit(n, depth):
        if depth > limit_depth:
            raise YamlLimitError(f'nested more than {limit_depth} levels deep (aliases expanded)', n.start_mark)
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in busy:
            raise YamlLimitError('an alias refers to a node that contains it (a recursive structure)', n.start_mark)
        busy.add(key)
        if isinstance(n, yaml.SequenceNode):
            children = n.value
        elif isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        else:
            children = []
        size, deepest = 1, 0
        for child in children:
            s, d = visit(child, depth + 1)
            size, deepest = size + s, max(deepest, d)
        busy.discard(key)
        if size > limit_size and not culprit:
            culprit.append(n.start_mark)
        sizes[key] = (size, deepest + 1)
        return sizes[key]
    size, depth = visit(node, 1)
    return size, depth, (culprit[0] if culprit else None)


class SafeYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a key given twice in one mapping refused and the document's size
    (aliases expanded) and depth bounded (module docstring)."""

    def compose_document(self):
        node = super().compose_document()
        if node is not None:
            size, _, mark = expanded_size(node)
            if size > MAX_YAML_NODES:
                raise YamlLimitError(f'its aliases expand the document to {size:,} values, more than the '
                                     f'{MAX_YAML_NODES:,} allowed (a YAML bomb?); write the values out', mark)
        return node

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            try:
                key = self.construct_object(key_node, deep=True)
                hash(key)
            except Exception:
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {quote(key)} (first on line {seen[key] + 1}, again on line "
                                f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def yaml_error_message(e):
    """'line L, column C: problem' of a YAMLError (the first line of str(e) loses the position)."""
    mark = getattr(e, 'problem_mark', None) or getattr(e, 'context_mark', None)
    problem = getattr(e, 'problem', None) or str(e).splitlines()[0]
    context = getattr(e, 'context', None)
    where = f'line {mark.line + 1}, column {mark.column + 1}: ' if mark is not None else ''
    text = f'{where}{problem}' + (f' ({context})' if context and context not in problem else '')
    if "'\\t'" in problem:
        text += ' (YAML does not allow tabs for indentation: use spaces)'
    return ' '.join(text.split())


def parse_yaml(text, where):
    """YAML text -> data (``SafeYamlLoader``); a one-line UserError ``<where> is not valid YAML: ...``."""
    try:
        return yaml.load(text, Loader=SafeYamlLoader)
    except yaml.YAMLError as e:
        raise UserError(f'{where} is not valid YAML: {yaml_error_message(e)}') from None
    except RecursionError:
        raise UserError(f'{where} is not valid YAML: nested too deeply') from None


def load_yaml(path, what='YAML file'):
    """A YAML file -> data (``parse_yaml``), the file named in every failure."""
    return parse_yaml(read_text(path, what), f"{what} '{path}'")


def load_yaml_mapping(path, what='YAML file', empty_ok=True):
    """A YAML file that must hold a mapping (an empty file is ``{}`` when ``empty_ok``)."""
    content = load_yaml(path, what)
    if content is None and empty_ok:
        return {}
    if not isinstance(content, dict):
        raise UserError(f"{what} '{path}' must hold a mapping of keys to values, got "
                        f"{'nothing' if content is None else type(content).__name__}")
    return content


# ------------------------------------------------------------------------------------------------ JSON

def _unique_pairs(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f'duplicate key {quote(key)}; keep one')
        out[key] = value
    return out


def _json_depth(value, limit):
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            raise ValueError(f'nested more than {limit} levels deep')
        if isinstance(v, dict):
            stack.extend((c, d + 1) for c in v.values())
        elif isinstance(v, list):
            stack.extend((c, d + 1) for c in v)


def parse_json(text, where):
    """JSON text -> data (duplicate keys refused, nesting bounded); one line naming ``where``."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_pairs)
        _json_depth(value, MAX_JSON_DEPTH)
        return value
    except RecursionError:
        raise UserError(f'{where} is not valid JSON: nested too deeply') from None
    except ValueError as e:
        raise UserError(f"{where} is not valid JSON: {' '.join(str(e).split())[:200]}") from None


def load_json(path, what='JSON file'):
    return parse_json(read_text(path, what), f"{what} '{path}'")


def load_json_object(path, what='JSON file', keys=()):
    """A JSON file that must hold an object with ``keys``; the missing key is named with the file."""
    content = load_json(path, what)
    if not isinstance(content, dict):
        raise UserError(f"{what} '{path}' must hold a JSON object, got {type(content).__name__}")
    missing = [k for k in keys if k not in content]
    if missing:
        raise UserError(f"{what} '{path}' has no key {quote(missing[0])}: not a file this tool wrote")
    return content


# ------------------------------------------------------------------------------------------------ pickles

# What a label / result pickle may hold: tuples, lists, dicts, str, int, float and numpy arrays and
# scalars (the globals numpy's pickles name). Anything else (a class, a function such as os.system)
# is refused before it is looked up, so a crafted file cannot run code.
SAFE_PICKLE_GLOBALS = {
    ('numpy', 'ndarray'), ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
    ('_codecs', 'encode'),                                  # bytes in protocol-2 pickles (numpy scalars)
    ('collections', 'OrderedDict'),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ``SAFE_PICKLE_GLOBALS`` (plus numpy's dtype classes)."""

    def find_class(self, module, name):
        if (module, name) in SAFE_PICKLE_GLOBALS or (module == 'numpy.dtypes' and name.endswith('DType')):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load '{quote(module, 60)[1:-1]}.{quote(name, 60)[1:-1]}' "
                                     "(only tuples, lists, dicts, str, numbers and numpy arrays are allowed)")


def safe_pickle_load(f):
    """``pickle.load`` restricted to plain data (``RestrictedUnpickler``)."""
    return RestrictedUnpickler(f).load()


def read_pickle(path, what, made_by):
    """Unpickle ``path`` (a ``what`` file that ``made_by`` writes) with the restricted unpickler (plain
    data only: a crafted pickle cannot run code), or raise a one-line UserError."""
    if not os.path.isfile(path) and not os.path.isdir(path):
        raise UserError(f"{what} file '{path}' does not exist ({made_by})")
    check_input(path, f'{what} file')
    try:
        with open(path, 'rb') as f:
            return safe_pickle_load(f)
    except Exception as e:
        raise UserError(f"cannot unpickle {what} file '{path}': {type(e).__name__}: "
                        f"{' '.join(str(e).split())[:300]}") from e


# ------------------------------------------------------------------------------------------------ arrays

NPY_MAGIC = b'\x93NUMPY'
ZIP_MAGIC = b'PK\x03\x04'


def npy_header(path, what='array file'):
    """``(shape, dtype)`` of an ``.npy`` file from its header, checked against the file's size before
    anything is read or allocated: a header that declares more data than the file holds is refused."""
    import numpy as np
    check_input(path, what)
    try:
        with open(path, 'rb') as f:
            start = f.read(6)
            if start[:4] == ZIP_MAGIC:
                raise UserError(f"{what} '{path}' is an .npz archive (several named arrays); give the .npy "
                                'file of one array')
            if start != NPY_MAGIC:
                raise UserError(f"{what} '{path}' is not an .npy file (no NumPy header; truncated or another "
                                'format?)')
            f.seek(0)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=10000)
            else:                            # 2.0 and 3.0 (a UTF-8 header) share the layout
                shape, _, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=10000)
            offset = f.tell()
        size = os.path.getsize(path)
    except UserError:
        raise
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, MemoryError, OverflowError) as e:
        raise UserError(f"{what} '{path}' has an unreadable .npy header ({describe(e)})") from None
    if dtype.hasobject:
        raise UserError(f"{what} '{path}' holds Python objects (dtype {dtype}); save a numeric array")
    count = 1
    for n in shape:
        count *= int(n)
    declared = count * dtype.itemsize
    if declared > size - offset:
        raise UserError(f"{what} '{path}': its header declares shape {tuple(shape)} ({declared:,} bytes of "
                        f"{dtype}) but the file holds {max(0, size - offset):,}: truncated or a lying header")
    return tuple(int(n) for n in shape), dtype


def load_npy(path, what='array file', dims=None, kinds='fiu', mmap=True):
    """Read an ``.npy`` array (memory-mapped when ``mmap``) after ``npy_header``'s checks; ``dims``
    ('N, C, T, V, M') states the rank, ``kinds`` the dtype kinds allowed (f float, i/u integer, b bool)."""
    import numpy as np
    shape, dtype = npy_header(path, what)
    if dims is not None:
        names = [d.strip() for d in dims.split(',')]
        if len(shape) != len(names):
            raise UserError(f"{what} '{path}' has shape {shape}; expected {len(names)} dimensions ({dims})")
    if dtype.kind not in kinds:
        expected = {'f': 'float32', 'iu': 'integers', 'fiu': 'numbers'}.get(kinds, f'kinds {kinds}')
        raise UserError(f"{what} '{path}' has dtype {dtype}; expected {expected}")
    try:
        return np.load(path, mmap_mode='r' if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError, MemoryError) as e:
        raise UserError(f"cannot read {what} '{path}' as .npy: {describe(e)}") from None


def load_npz(path, what='archive', keys=None):
    """The arrays ``keys`` (all when None) of an ``.npz`` archive as a dict, no object arrays; the file
    and a missing key named."""
    import numpy as np
    check_input(path, what)
    try:
        with open(path, 'rb') as f:
            start = f.read(6)
        if start == NPY_MAGIC:
            raise UserError(f"{what} '{path}' is a single .npy array; give the .npz archive")
        with np.load(path, allow_pickle=False) as data:
            names = list(data.keys())
            missing = [k for k in (keys or ()) if k not in names]
            if missing:
                raise UserError(f"{what} '{path}' has no array {quote(missing[0])} (it holds "
                                f"{', '.join(names[:8]) or 'none'})")
            return {k: data[k] for k in (keys or names)}
    except UserError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, MemoryError, OverflowError) as e:
        raise UserError(f"cannot read {what} '{path}' as .npz: {describe(e)}") from None

