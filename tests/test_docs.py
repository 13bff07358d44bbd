"""Every reference to a section of the docs (``docs/X.md, "Title"``) in the code, configs and docs names a
section that exists: a heading or a bold paragraph lead of that file that begins with the title."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = re.compile(r'docs/([A-Z_]+\.md),? "([A-Z][^"]{0,80})"')
FOLDERS = ('config', 'docs', 'feeder', 'net', 'processor', 'tools', 'torchlight')


def referring_files():
    yield os.path.join(ROOT, 'README.md')
    yield os.path.join(ROOT, 'main.py')
    for folder in FOLDERS:
        for base, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                if name.endswith(('.py', '.md', '.yaml', '.sh')):
                    yield os.path.join(base, name)


def section_leads(doc):
    """The titles of a doc: heading text and bold paragraph leads, markup stripped."""
    with open(os.path.join(ROOT, 'docs', doc), encoding='utf-8') as handle:
        text = handle.read()
    heads = [m.group(1) for m in re.finditer(r'^#+\s+(.*)$', text, re.M)]
    return heads + re.findall(r'\*\*([^*]+)\*\*', text)


def test_every_section_reference_names_an_existing_section():
    leads, missing = {}, []
    for path in referring_files():
        with open(path, encoding='utf-8') as handle:
            text = handle.read()
        for doc, title in REFERENCE.findall(text):
            title = re.sub(r'\s*\n\s*#?\s*', ' ', title)      # a title wrapped over comment lines
            if doc not in leads:
                leads[doc] = section_leads(doc) if os.path.isfile(os.path.join(ROOT, 'docs', doc)) else []
            if not any(lead.strip().startswith(title) for lead in leads[doc]):
                missing.append(f'{os.path.relpath(path, ROOT)}: docs/{doc}, "{title}"')
    assert not missing, 'references to sections that do not exist:\n' + '\n'.join(sorted(set(missing)))
