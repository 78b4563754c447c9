"""The documentation holds together and says only what is true of the code:

- every relative link of README.md and docs/*.md points to a file that exists (and, for a
  #fragment into a Markdown file, to one of its headings);
- every ``--flag`` written in README.md, docs/*.md and the comments of configs/*.yaml is a flag
  of the program the command line runs (main.py, a bench/ script, download.py, metrics.fid, or an
  external tool of the allow-list below), and a flag of one of them where no command is written;
- every dotted ``core.x.y`` / ``metrics.x`` name imports (module, or module attribute), every
  ``core/``, ``metrics/``, ``tests/``, ``bench/``, ``configs/``, ``docs/`` path exists, and so does
  every ``tests/...py::test_name`` and bare ``test_*.py`` file named;
- every ``download.sh TARGET`` / ``download.py TARGET`` is one of the scripts' targets;
- every configs/*.yaml parses as a configuration (its keys are flags);
- the pages hold no path of a development machine and no history of the work;
- the README stays a short page for users, and it still states the commands CI runs (.ci/run).

Each check is a function of a text that returns what it finds wrong; a made-up text shows that
each one can fail.
"""
import ast
import functools
import glob
import importlib
import os
import re
import shlex

import pytest
from helpers import ROOT

README = os.path.join(ROOT, 'README.md')
PAGES = [README] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.yaml')))
README_MAX_LINES = 150

LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
FENCE = re.compile(r'^```(\w*)[^\n]*\n(.*?)^```', re.S | re.M)
FLAG = re.compile(r'(?<![\w-])--[A-Za-z][\w-]*')

# Flags of programs that are not this project's, where the docs write them (checked by name only).
EXTERNAL_FLAGS = {
    # torchrun (torch.distributed.run): the launcher options the docs use
    'torchrun': {'--nproc_per_node', '--nnodes', '--node_rank', '--rdzv_backend', '--rdzv_endpoint', '--rdzv_id',
                 '--max-restarts', '--standalone'},
    'pip': set(),     # pip install -r requirements.txt: short flags only
    'pytest': set(),  # python3 -m pytest -q -m "not slow": short flags only
    'ruff': set(),    # python3 -m ruff check .: no flags
    'mypy': set(),    # python3 -m mypy: settings in pyproject.toml, no flags
}
# Flags of tools the docs mention without a command line of their own.
OTHER_TOOL_FLAGS = {
    '--gres', '--time', '--signal', '--requeue',  # sbatch, in a SLURM script's #SBATCH line
    '--ipc', '--shm-size',                        # docker run, for the shared memory of loader workers
}
WRAPPERS = {'time', 'srun', 'sudo', 'exec', 'nohup'}
PYTHONS = {'python', 'python3'}


def page_id(path):
    return os.path.relpath(path, ROOT)


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def prose(text):
    """The text without fenced code blocks and inline code (brackets there are not links)."""
    text = FENCE.sub('', text)
    return re.sub(r'`[^`\n]*`', '', text)


# ---------------------------------------------------------------------------- links

def anchors(path):
    """GitHub's heading ids of a Markdown file: lower case, punctuation dropped, spaces to '-',
    repeats numbered."""
    text = FENCE.sub('', read(path))
    seen, ids = {}, set()
    for title in re.findall(r'^#{1,6}\s+(.*?)\s*#*\s*$', text, re.M):
        slug = re.sub(r'[^\w\- ]', '', title.lower()).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f'{slug}-{n}')
    return ids


def relative_links(text):
    for target in LINK.findall(prose(text)):
        if not re.match(r'[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto: ...
            yield target


def link_problems(path):
    bad = []
    for target in relative_links(read(path)):
        file, _, fragment = target.partition('#')
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        if not os.path.exists(dest):
            bad.append(f'{target}: no file {os.path.relpath(dest, ROOT)}')
        elif fragment and dest.endswith('.md') and fragment not in anchors(dest):
            bad.append(f'{target}: no heading #{fragment} in {os.path.relpath(dest, ROOT)}')
    return bad


# ---------------------------------------------------------------------------- flags

@functools.lru_cache(None)
def main_flags():
    """The option strings of main.py's parser (the one table of flags, core.cli.flags)."""
    from core.cli.flags import build_parser
    return frozenset(build_parser()._option_string_actions)


@functools.lru_cache(None)
def script_flags(path):
    """The flags a Python script's argparse parsers define (read from its source); a script that
    hands the rest of its command line to core.cli.arguments.parse_args takes main.py's flags too."""
    source = read(path)
    flags = {'-h', '--help'}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, 'id', '')
            if name in ('add_argument', 'add'):
                flags |= {a.value for a in node.args if isinstance(a, ast.Constant)
                          and isinstance(a.value, str) and a.value.startswith('-')}
    if 'parse_known_args' in source and 'core.cli.arguments' in source:
        flags |= main_flags()
    return frozenset(flags)


@functools.lru_cache(None)
def known_flags():
    """Every flag some program of the docs takes: main.py, the scripts, the external tools."""
    flags = set(main_flags()) | OTHER_TOOL_FLAGS
    for tool in EXTERNAL_FLAGS.values():
        flags |= tool
    for path in glob.glob(os.path.join(ROOT, 'bench', '*.py')) + [os.path.join(ROOT, 'metrics', 'fid.py')]:
        flags |= script_flags(path)
    return frozenset(flags)


def logical_lines(text):
    """Lines with their backslash continuations joined."""
    return re.sub(r'\s*\\\n\s*', ' ', text).splitlines()


def command_lines(text, yaml=False):
    """The command lines written in a page: the lines of its shell code blocks (without their
    comments) and its inline code; in a YAML file, what follows 'python'/'torchrun'/'bash' in
    its comments."""
    if yaml:
        comments = '\n'.join(line.strip().lstrip('#').strip() for line in text.splitlines()
                             if line.strip().startswith('#'))
        for line in logical_lines(comments):
            m = re.search(r'(?:^|\s)((?:python3?|torchrun|bash)\s.*)', line)
            if m:
                yield m.group(1)
        return
    for lang, body in FENCE.findall(text):
        if lang in ('', 'bash', 'sh', 'shell', 'console'):
            for line in logical_lines(body):
                if not line.strip().startswith('#'):
                    yield re.sub(r'\s#\s.*$', '', line)
    yield from re.findall(r'`([^`\n]+)`', FENCE.sub('', text))


def program_of(words):
    """(program, its arguments) of a command's words: main.py, a script path, 'torchrun', 'pip',
    'pytest', or None for a line that runs none of them."""
    while words and (words[0] in WRAPPERS or re.match(r'^[A-Za-z_]\w*=', words[0])):
        words = words[1:]
    if not words:
        return None, []
    head, rest = words[0], words[1:]
    if head in PYTHONS:
        if rest[:1] == ['-m'] and len(rest) > 1:
            module = rest[1]
            if module in EXTERNAL_FLAGS:
                return module, rest[2:]
            return module.replace('.', '/') + '.py', rest[2:]
        if rest and rest[0].endswith('.py'):
            return rest[0], rest[1:]
        return None, []
    if head in ('bash', 'sh') and rest and rest[0].endswith('.sh'):
        return rest[0], rest[1:]
    if head in EXTERNAL_FLAGS:
        if head == 'torchrun':
            scripts = [i for i, w in enumerate(rest) if w.endswith('.py')]
            if scripts:
                launcher, script = rest[:scripts[0]], rest[scripts[0]:]
                return 'torchrun', launcher + ['::'] + script
        return head, rest
    if head.endswith('.py') and rest and ('/' in head or os.path.exists(os.path.join(ROOT, head))):
        return head, rest
    return None, []


def flags_of(program):
    """The flags ``program`` takes, or None when it is a script that does not exist here."""
    if program in EXTERNAL_FLAGS:
        return EXTERNAL_FLAGS[program]
    if program == 'main.py':
        return main_flags()
    if program.endswith('.sh'):
        return frozenset({'-h', '--help'})
    path = os.path.join(ROOT, program)
    if not os.path.isfile(path):
        return None
    return script_flags(path)


def flag_problems(text, yaml=False):
    """Flags that the program of their command line does not take, scripts that do not exist,
    and flags (anywhere in the text) that no program of the docs takes."""
    bad = []
    for line in command_lines(text, yaml):
        for piece in re.split(r'&&|\|\||[|;]', line):
            try:
                words = shlex.split(piece)
            except ValueError:
                words = piece.split()
            words = [w.strip('[]()') for w in words]
            program, args = program_of(words)
            if program is None:
                continue
            if program == 'torchrun' and '::' in args:
                cut = args.index('::')
                launcher, (program, *args) = args[:cut], args[cut + 1:]
                bad += [f'{piece.strip()!r}: torchrun takes no {w}' for w in launcher
                        if FLAG.fullmatch(w.split('=')[0]) and w.split('=')[0] not in EXTERNAL_FLAGS['torchrun']]
            flags = flags_of(program)
            if flags is None:
                bad.append(f'{piece.strip()!r}: no script {program}')
                continue
            bad += [f'{piece.strip()!r}: {program} has no flag {w.split("=")[0]}' for w in args
                    if FLAG.fullmatch(w.split('=')[0]) and w.split('=')[0] not in flags]
    bad += [f'{flag}: no program of the docs takes it' for flag in sorted(set(FLAG.findall(text)) - known_flags())]
    return bad


# ---------------------------------------------------------------------------- names and paths

FILE_SUFFIXES = {'py', 'json', 'jsonl', 'yaml', 'md', 'ckpt', 'npz', 'txt', 'png', 'jpg', 'onnx'}
DOTTED = re.compile(r'(?<![\w./-])(?:core|metrics)(?:\.[A-Za-z_]\w*)+')
PATH = re.compile(r'(?<![\w./-])((?:core|metrics|tests|bench|configs|docs)/[\w./-]*(?:::\w+)?)')
BARE_TEST = re.compile(r'(?<![\w./-])(test_\w+\.py)\b')


def resolves(name):
    """Whether a dotted name imports: the longest module prefix, then attributes."""
    parts = name.split('.')
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def python_imports(text):
    """The dotted names that the Python code blocks of a page import from core/ and metrics/."""
    for lang, body in FENCE.findall(text):
        if lang != 'python':
            continue
        for node in ast.walk(ast.parse(body)):
            if isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] in ('core', 'metrics'):
                yield from (f'{node.module}.{alias.name}' for alias in node.names)
            elif isinstance(node, ast.Import):
                yield from (a.name for a in node.names if a.name.split('.')[0] in ('core', 'metrics'))


def name_problems(text):
    names = {n for n in DOTTED.findall(text) if n.rsplit('.', 1)[1] not in FILE_SUFFIXES}
    names |= set(python_imports(text))
    return [f'{name}: does not import' for name in sorted(names) if not resolves(name)]


@functools.lru_cache(None)
def existing_test_files():
    return frozenset(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, 'tests', '**', 'test_*.py'),
                                                             recursive=True))


def path_problems(text):
    bad = []
    for written in sorted(set(PATH.findall(text))):
        path, _, test = written.rstrip('.,:;').partition('::')
        path = path.rstrip('.,:;')
        if re.search(r'\b[A-Z_]{3,}\b(?!\.md)', path):  # a placeholder: configs/NAME.yaml
            continue
        full = os.path.join(ROOT, path)
        if not os.path.exists(full):
            bad.append(f'{written}: no such file or folder')
        elif test and not re.search(rf'^\s*def {re.escape(test)}\(', read(full), re.M):
            bad.append(f'{written}: no test {test} in {path}')
    bad += [f'{name}: no such test file under tests/' for name in sorted(set(BARE_TEST.findall(text)))
            if name not in existing_test_files()]
    return bad


# ---------------------------------------------------------------------------- download targets

@functools.lru_cache(None)
def download_targets():
    """The targets of download.sh (its case patterns) and of download.py (TARGETS and ALIASES)."""
    script = read(os.path.join(ROOT, 'download.sh'))
    cases = script[script.index('case "${1:-}" in'):]
    sh = {t for line in re.findall(r'^\s+([\w|-]+)\)', cases, re.M) for t in line.split('|')} - {'-h', '--help', '*'}
    import download
    return {'download.sh': frozenset(sh), 'download.py': frozenset(download.TARGETS) | frozenset(download.ALIASES)}


def download_problems(text):
    return [f'{script} {target}: no such target (targets: {", ".join(sorted(download_targets()[script]))})'
            for script, target in sorted(set(re.findall(r'(download\.(?:sh|py))\s+([a-z][\w-]*)', text)))
            if target not in download_targets()[script]]


# ---------------------------------------------------------------------------- machine paths and history

HISTORY = [
    (re.compile(r'(?<![\w.])/(?:work|root|tmp)/|(?<![\w.])/home/\w+|~/\w[\w./-]*'), 'a path of a development machine'),
    (re.compile(r'\bissues?\s*#?\d+', re.I), 'a reference to an issue of the work'),
    (re.compile(r'\bthe [\w-]+ issue\b', re.I), 'a reference to an issue of the work'),
    (re.compile(r'\bsessions?\b', re.I), 'history of the work ("session")'),
]


def history_problems(text):
    return [f'{m.group(0)!r}: {why}' for pattern, why in HISTORY for m in pattern.finditer(text)]


# ---------------------------------------------------------------------------- the checks on the docs

ALL = PAGES + CONFIGS


@pytest.mark.parametrize('page', PAGES, ids=page_id)
def test_relative_links_resolve(page):
    bad = link_problems(page)
    assert not bad, f'{page_id(page)}: ' + '; '.join(bad)


@pytest.mark.parametrize('page', ALL, ids=page_id)
def test_flags_exist(page):
    bad = flag_problems(read(page), yaml=page.endswith('.yaml'))
    assert not bad, f'{page_id(page)}: ' + '; '.join(bad)


@pytest.mark.parametrize('page', ALL, ids=page_id)
def test_names_import(page):
    bad = name_problems(read(page))
    assert not bad, f'{page_id(page)}: ' + '; '.join(bad)


@pytest.mark.parametrize('page', ALL, ids=page_id)
def test_paths_exist(page):
    bad = path_problems(read(page))
    assert not bad, f'{page_id(page)}: ' + '; '.join(bad)


@pytest.mark.parametrize('page', ALL, ids=page_id)
def test_download_targets_exist(page):
    bad = download_problems(read(page))
    assert not bad, f'{page_id(page)}: ' + '; '.join(bad)


@pytest.mark.parametrize('page', ALL, ids=page_id)
def test_no_machine_paths_or_history(page):
    bad = history_problems(read(page))
    assert not bad, f'{page_id(page)}: ' + '; '.join(bad)


@pytest.mark.parametrize('config', CONFIGS, ids=page_id)
def test_config_keys_are_flags(config):
    """Each shipped config file loads (an unknown key is a UserError: tests/core/cli/test_config_files.py)."""
    from core.cli.arguments import parse_args
    parse_args(['--config', config, '--mode', 'train'])


def test_download_targets_agree():
    assert download_targets()['download.sh'] == download_targets()['download.py']


def test_every_docs_page_is_in_the_index():
    index = read(os.path.join(ROOT, 'docs', 'README.md'))
    pages = {os.path.basename(p) for p in PAGES[1:]} - {'README.md'}
    linked = {os.path.basename(t.partition('#')[0]) for t in LINK.findall(index)}
    assert pages <= linked, f'docs/README.md does not link {sorted(pages - linked)}'


def test_readme_is_short_and_states_the_ci_commands():
    text = read(README)
    assert len(text.splitlines()) <= README_MAX_LINES, f'README.md: {len(text.splitlines())} lines'
    ci = read(os.path.join(ROOT, '.ci', 'run'))
    # (README's command, what .ci/run holds of it: it installs with python3 -m pip -q)
    for command, in_ci in (('pip install -r requirements.txt', '-r requirements.txt'),
                           ('python3 -m pytest -q -n 2', 'python3 -m pytest -q -n 2'),
                           ('python3 -m ruff check .', 'python3 -m ruff check .'),
                           ('python3 -m mypy', 'python3 -m mypy')):
        assert in_ci in ci, f'.ci/run no longer runs {in_ci!r}: update README.md and this test'
        assert command in text, f'README.md must state {command!r} (what .ci/run runs)'


# ---------------------------------------------------------------------------- each check can fail

def test_a_broken_link_or_fragment_is_reported(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('# Title\n[a](missing.md) [b](#title) [c](#no-such-heading) `[d](not-a-link.md)`\n')
    bad = link_problems(str(page))
    assert len(bad) == 2 and 'missing.md' in bad[0] and '#no-such-heading' in bad[1]


def test_a_wrong_flag_is_reported():
    text = ('```bash\npython main.py --mode train --no_such_flag 1   # a --made_up_in_comment\n'
            'torchrun --nproc_per_node 2 --bogus_launcher main.py --mode train\n'
            'python bench/train_speed.py --count_only --mode train\n'
            'python bench/no_such_script.py --x 1\n```\n'
            'Inline: `python main.py --resume_iter 1 --img_sise 256`; prose `--another_made_up`.\n')
    bad = '\n'.join(flag_problems(text))
    for wrong in ('main.py has no flag --no_such_flag', 'torchrun takes no --bogus_launcher',
                  'bench/train_speed.py has no flag --mode', 'no script bench/no_such_script.py',
                  'main.py has no flag --img_sise', '--another_made_up: no program', '--made_up_in_comment: no program'):
        assert wrong in bad, wrong
    for right in ('--count_only', '--nproc_per_node', '--resume_iter'):
        assert f'no flag {right}' not in bad and f'{right}:' not in bad
    yaml_text = 'amp: bf16\n# python main.py --config configs/fast.yaml \\\n#   --made_up 1\n'
    assert flag_problems(yaml_text, yaml=True) == ["'python main.py --config configs/fast.yaml --made_up 1': "
                                                   "main.py has no flag --made_up",
                                                   '--made_up: no program of the docs takes it']
    assert not flag_problems('`python main.py --mode train` and `--amp bf16`, `bench/demo_quality.py --mode eval`')


def test_a_wrong_name_is_reported():
    text = ('`core.nn.networks.ModelConfig`, `core.model.unused_parameter_names`, `metrics.no_such_module`, '
            'metrics.jsonl\n```python\nfrom core.api import StarGANv2, NoSuchThing\n```\n')
    assert name_problems(text) == ['core.api.NoSuchThing: does not import',
                                   'core.model.unused_parameter_names: does not import',
                                   'metrics.no_such_module: does not import']


def test_a_wrong_path_is_reported():
    text = ('`core/nn/networks.py`, `core/no_such.py`, `configs/NAME.yaml`, tests/core/cli/test_flags.py, '
            '`tests/test_docs.py::test_no_such_test`, `test_no_such_file.py`, `test_docs.py`.')
    assert path_problems(text) == ['core/no_such.py: no such file or folder',
                                   'tests/test_docs.py::test_no_such_test: no test test_no_such_test in '
                                   'tests/test_docs.py',
                                   'test_no_such_file.py: no such test file under tests/']


def test_a_wrong_download_target_is_reported():
    bad = download_problems('`bash download.sh afhq` then `python download.py wing`, `download.py NAME`')
    assert len(bad) == 1 and bad[0].startswith('download.sh afhq: no such target')


def test_machine_paths_and_history_are_reported():
    text = ('--official /tmp/official, /work/x, /home/someone/x, ~/stargan-v2, /root/x; issue 22; '
            'the speed issue; the session; ort.InferenceSession and path/to/stargan-v2 are fine')
    assert len(history_problems(text)) == 8


def test_a_config_with_an_unknown_key_is_refused(tmp_path):
    from core.cli.arguments import parse_args
    from core.errors import UserError
    bad = tmp_path / 'bad.yaml'
    bad.write_text('img_size: 32\nno_such_key: 1\n')
    with pytest.raises(UserError, match='no_such_key'):
        parse_args(['--config', str(bad), '--mode', 'train'])
