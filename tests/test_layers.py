"""The import graph of core/ and metrics/ has no circle and every import points down LAYERS.

Every ``import`` and ``from ... import`` counts, at module level and inside functions alike
(a function-local import closes a circle just as well). docs/layout.md explains the layers.
"""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ('core', 'metrics')

# Bottom to top. A module may import modules of its own layer or of a layer below it;
# within a layer, the cycle check keeps the imports in one direction. The folders of core/
# group modules by job (docs/layout.md draws both); a folder's modules may sit on several layers.
FOLDERS = ('core.io', 'core.nn', 'core.datasets', 'core.train', 'core.cli', 'core.use')
LAYERS = [
    # 0. foundations: no project imports but these (the packages' __init__ files are docstrings only); the
    # model card's text
    ['core', 'core.errors', 'core.cli.mode_table', 'metrics', *FOLDERS, 'core.use.model_card'],
    # 1. files and devices: atomic writes, run folders, image files, the device decision, the demo dataset
    ['core.io.files', 'core.device', 'core.io.run_folder', 'core.io.images', 'core.datasets.demo_shapes'],
    # 2. data, networks, checkpoint files, flags, Hub folders and their transport
    ['core.datasets.folders', 'core.datasets.order', 'core.datasets.pipeline', 'core.nn.fan', 'core.nn.networks',
     'core.nn.styles', 'core.io.ckpt_files', 'core.train.recompute', 'core.cli.flags', 'core.use.hub_folder',
     'core.use.hub_transport'],
    # 3. configuration, training pieces, loading a run, alignment, the API's image and domain inputs
    ['core.cli.config_files', 'core.cli.arguments', 'core.train.distributed', 'core.train.losses', 'core.train.step',
     'core.use.load_run', 'core.use.align', 'core.use.inputs'],
    # 4. what the modes produce: the Python API, videos, sample grids, translation, export, metrics
    ['core.api', 'core.use.video', 'core.use.sample_grids', 'core.use.translate', 'core.use.export',
     'metrics.lpips', 'metrics.fid', 'metrics.eval'],
    # 5. applications: the training loop, the web demo
    ['core.train.loop', 'core.use.serve'],
    # 6. compatibility: the official module paths, delegating to the layers below
    ['core.wing', 'core.utils', 'core.data_loader', 'core.checkpoint', 'core.model', 'core.solver'],
]
# What may sit at the top of core/ beside the folders: the bottom modules, the Python API (a public path)
# and the official module paths.
TOP = ('core.errors', 'core.device', 'core.api')
COMPATIBILITY = LAYERS[-1]


def modules(root=ROOT):
    """{dotted module name: path} of every module of the packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob('*.py')):
            parts = path.relative_to(root).with_suffix('').parts
            found['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    return found


def imports_of(name, path, known):
    """{imported project module: first line} for every import statement anywhere in the file."""
    is_package = path.stem == '__init__'
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level - 1
                parts = name.split('.') if is_package else name.split('.')[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = '.'.join(parts + ([node.module] if node.module else []))
            else:
                base = node.module
            # `from core import wing` imports core.wing; `from core.wing import FAN` imports core.wing
            targets = [base] + [f'{base}.{alias.name}' for alias in node.names]
        for target in targets:
            # `import core.wing.x` or an attribute path: the longest known module prefix
            parts = target.split('.')
            for i in range(len(parts), 0, -1):
                candidate = '.'.join(parts[:i])
                if candidate in known:
                    if candidate != name:
                        found.setdefault(candidate, node.lineno)
                    break
    return found


def import_graph(root=ROOT):
    """{module: {imported module: line}} over core/ and metrics/."""
    known = modules(root)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def find_cycle(graph):
    """One import circle as [a, b, ..., a], or None."""
    state = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, path)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [])
            if cycle:
                return cycle
    return None


def circles(graph):
    """The groups of modules that import one another in a circle (strongly connected
    components of more than one module, or a module importing itself), each sorted."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(groups)


def upward_imports(graph, layers=LAYERS):
    """['a (layer i) imports b (layer j > i), line n', ...] plus the modules no layer names."""
    level = {m: i for i, layer in enumerate(layers) for m in layer}
    problems = [f'{m} is in no layer of tests/test_layers.py LAYERS' for m in sorted(graph) if m not in level]
    problems += [f'LAYERS names {m}, which is not a module' for m in sorted(level) if m not in graph]
    for m in sorted(graph):
        for target, line in sorted(graph[m].items()):
            if m in level and target in level and level[target] > level[m]:
                problems.append(f'{m} (layer {level[m]}) imports {target} (layer {level[target]}) at line {line}')
    return problems


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    groups = circles(graph)
    message = '; '.join(f'import cycle of {len(g)} modules ({", ".join(g)})' for g in groups)
    cycle = find_cycle(graph)
    assert cycle is None and not groups, f'{message}, e.g. {" -> ".join(cycle)}'



def test_every_import_points_down_the_layers():
    problems = upward_imports(import_graph())
    assert not problems, 'imports against tests/test_layers.py LAYERS:\n' + '\n'.join(problems)


def test_nothing_below_imports_the_compatibility_layer():
    graph = import_graph()
    users = [f'{m} imports {t}' for m in graph if m not in COMPATIBILITY for t in graph[m] if t in COMPATIBILITY]
    assert not users, users


def test_the_checks_see_function_local_imports_and_circles(tmp_path):
    """The graph counts an import inside a function, and a circle through one is found."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / '__init__.py').write_text('')
    (tmp_path / 'core' / 'a.py').write_text('from core.b import f\n')
    (tmp_path / 'core' / 'b.py').write_text('def f():\n    from core import a\n    return a\n')
    (tmp_path / 'core' / 'c.py').write_text('from . import a\n')
    graph = import_graph(tmp_path)
    assert graph['core.b'] == {'core': 2, 'core.a': 2}  # the package, then the module
    assert graph['core.c'] == {'core': 1, 'core.a': 1}
    assert find_cycle(graph) == ['core.a', 'core.b', 'core.a']
    assert circles(graph) == [['core.a', 'core.b']]
    layers = [['core', 'metrics', 'core.b'], ['core.a', 'core.c']]
    assert upward_imports(graph, layers) == ['core.b (layer 0) imports core.a (layer 1) at line 2']


def test_the_top_of_core_holds_only_the_bottom_modules_the_api_and_the_official_paths():
    top = {m for m in modules() if m.count('.') == 1 and m.startswith('core.') and m not in FOLDERS}
    assert top == set(TOP) | set(COMPATIBILITY), sorted(top ^ (set(TOP) | set(COMPATIBILITY)))


# Names that look alike by letters but not by job, each with its reason.
NOT_ALIKE = {('core.use.model_card', 'core.model'): "a Hub folder's README.md, not a network"}


def _words(name):
    """The words of a module name, plural or not: 'data_loader' -> {'data', 'loader'}."""
    return {w[:-1] if w.endswith('s') and len(w) > 3 else w for w in name.split('_')}


def near_names(names, official):
    """['module ~ official path'] for the modules whose own name shares a word with an official
    path's (loaders ~ data_loader, checkpoints ~ checkpoint, data ~ data_loader, util ~ utils)."""
    short = {m: m.rsplit('.', 1)[-1] for m in names}
    return [f'{m} ~ {c}' for c in official for m in names if m != c and (m, c) not in NOT_ALIKE
            and _words(short[m]) & _words(short[c])]


def test_no_module_has_a_near_name_of_an_official_path():
    """An official-path delegate and a real module never share a near-name (one is easy to edit
    for the other): no module's own name is close to a delegate's, whatever its folder."""
    near = near_names(list(modules()), COMPATIBILITY)
    assert not near, near


def test_the_near_name_check_sees_the_pairs_it_forbids():
    pairs = [('core.datasets.loaders', 'core.data_loader'), ('core.io.checkpoints', 'core.checkpoint'),
             ('core.data', 'core.data_loader'), ('core.nn.models', 'core.model'), ('core.util', 'core.utils')]
    for real, official in pairs:
        assert near_names([real, official], [official]) == [f'{real} ~ {official}']
