"""The documentation holds together: every relative link of README.md and docs/*.md points to
a file that exists (and, for a #fragment into a Markdown file, to one of its headings), the
README stays a short page for users, and it still states the commands CI runs (.ci/run)."""
import glob
import os
import re

import pytest

from helpers import ROOT

README = os.path.join(ROOT, 'README.md')
PAGES = [README] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))
README_MAX_LINES = 150

LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def prose(text):
    """The text without fenced code blocks and inline code (brackets there are not links)."""
    text = re.sub(r'^```.*?^```', '', text, flags=re.S | re.M)
    return re.sub(r'`[^`\n]*`', '', text)


def anchors(path):
    """GitHub's heading ids of a Markdown file: lower case, punctuation dropped, spaces to '-',
    repeats numbered."""
    text = re.sub(r'^```.*?^```', '', open(path, encoding='utf-8').read(), flags=re.S | re.M)
    seen, ids = {}, set()
    for title in re.findall(r'^#{1,6}\s+(.*?)\s*#*\s*$', text, re.M):
        slug = re.sub(r'[^\w\- ]', '', title.lower()).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f'{slug}-{n}')
    return ids


def relative_links(path):
    for target in LINK.findall(prose(open(path, encoding='utf-8').read())):
        if not re.match(r'[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto: ...
            yield target


@pytest.mark.parametrize('page', PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(page):
    bad = []
    for target in relative_links(page):
        file, _, fragment = target.partition('#')
        dest = os.path.normpath(os.path.join(os.path.dirname(page), file)) if file else page
        if not os.path.exists(dest):
            bad.append(f'{target}: no file {os.path.relpath(dest, ROOT)}')
        elif fragment and dest.endswith('.md') and fragment not in anchors(dest):
            bad.append(f'{target}: no heading #{fragment} in {os.path.relpath(dest, ROOT)}')
    assert not bad, f'{os.path.relpath(page, ROOT)}: ' + '; '.join(bad)


def test_every_docs_page_is_in_the_index():
    index = open(os.path.join(ROOT, 'docs', 'README.md'), encoding='utf-8').read()
    pages = {os.path.basename(p) for p in PAGES[1:]} - {'README.md'}
    linked = {os.path.basename(t.partition('#')[0]) for t in LINK.findall(index)}
    assert pages <= linked, f'docs/README.md does not link {sorted(pages - linked)}'


def test_readme_is_short_and_states_the_ci_commands():
    text = open(README, encoding='utf-8').read()
    assert len(text.splitlines()) <= README_MAX_LINES, f'README.md: {len(text.splitlines())} lines'
    ci = open(os.path.join(ROOT, '.ci', 'run'), encoding='utf-8').read()
    # (README's command, what .ci/run holds of it: it installs with python3 -m pip -q)
    for command, in_ci in (('pip install -r requirements.txt', '-r requirements.txt'),
                           ('python3 -m pytest -q', 'python3 -m pytest -q'),
                           ('python3 -m ruff check .', 'python3 -m ruff check .'),
                           ('python3 -m mypy', 'python3 -m mypy')):
        assert in_ci in ci, f'.ci/run no longer runs {in_ci!r}: update README.md and this test'
        assert command in text, f'README.md must state {command!r} (what .ci/run runs)'
