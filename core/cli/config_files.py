"""Configuration files: ``--config FILE.yaml`` (defaults for the flags, checked against their
types) and a run's ``config.yaml`` (what the run used; itself a valid ``--config`` file).
"""
import argparse
import os
from typing import IO, Any, Dict, Optional

import yaml
from munch import Munch

from core.cli.flags import CLI_ONLY, LATEST, build_parser, flag_actions, step_or_latest, workers
from core.errors import UserError
from core.io.files import atomic_write, read_small_file
from core.nn.networks import MODEL_KEYS, check_model_values

__all__ = ['CONFIG_FILENAME', 'read_yaml_defaults', 'save_config', 'load_config', 'as_dict']

CONFIG_FILENAME = 'config.yaml'


def _type_name(action):
    if isinstance(action, argparse._StoreTrueAction):
        return 'true/false'
    names = {int: 'an integer', float: 'a number', str: 'a string', step_or_latest: "an integer or 'latest'",
             workers: "a number of workers (0 or more) or 'auto'"}
    return names.get(action.type, 'a value')


def _coerce(key, value, action, path):
    """Check/convert one YAML value against the flag's type; UserError if wrong."""
    where = f"'{key}' in {path}"
    if value is None:
        if action.default is None and not action.required:
            return None
        raise UserError(f'{where} is empty; give it {_type_name(action)} or remove the line')
    if isinstance(action, argparse._StoreTrueAction):
        if isinstance(value, bool):
            return value
        raise UserError(f'{where} must be true or false, not {value!r}')
    t = action.type
    ok = True
    if t is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif t is float:
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                ok = False
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            ok = False
        else:
            value = float(value)
    elif t is str:
        ok = isinstance(value, str)
    elif t is step_or_latest:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or value == LATEST
    elif t is workers:
        ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or value == 'auto'
    if not ok:
        raise UserError(f'{where} must be {_type_name(action)}, not {value!r}')
    if action.choices is not None and value not in action.choices:
        raise UserError(f"{where} must be one of {', '.join(map(str, action.choices))}, not {value!r}")
    return value


def _read_yaml(path: str, fix: str) -> Any:
    """The YAML document of ``path``, read only when it is a small file; one-line UserError for a
    file too big, unreadable, not YAML or nested too deep."""
    def parse(f: IO[str]) -> Any:
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as e:
            mark = getattr(e, 'problem_mark', None)
            at = f' at line {mark.line + 1}' if mark is not None else ''
            raise UserError(f"config file '{path}' is not valid YAML{at}; {fix}") from None
    return read_small_file(path, parse, f"config file '{path}'", 'a config file', fix)


def read_yaml_defaults(path: str, parser: Optional[argparse.ArgumentParser] = None) -> Dict[str, Any]:
    """Read a --config YAML file into {dest: value}, checking keys and types (the model keys
    with the rules of every model configuration, ``core.nn.networks.check_model_values``)."""
    parser = parser or build_parser()
    if not os.path.isfile(path):
        raise UserError(f"config file '{path}' does not exist; check the --config path")
    data = _read_yaml(path, 'fix its syntax')
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must be a mapping of 'key: value' lines")
    actions = flag_actions(parser)
    out = {}
    for key, value in data.items():
        if key not in actions or key in CLI_ONLY:
            raise UserError(f"unknown key '{key}' in config file {path}; "
                            f"remove it or use one of the flag names (see --help)")
        out[key] = _coerce(key, value, actions[key], path)
    check_model_values({key: out[key] for key in MODEL_KEYS if key in out}, f"'{{}}' in config file {path}")
    return out


def as_dict(args: Any) -> Dict[str, Any]:
    """The arguments as a plain dict (from a Namespace, Munch or dict)."""
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    return dict(args)


def save_config(args: Any, folder: str, **overrides: Any) -> str:
    """Write the resolved configuration (``overrides`` replacing values of ``args``) to
    FOLDER/config.yaml atomically; return its path.

    The file is usable as ``--config`` (keys are flag names; ``config`` itself is left out).
    """
    data = {k: v for k, v in {**as_dict(args), **overrides}.items() if k not in CLI_ONLY}
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    return atomic_write(os.path.join(folder, CONFIG_FILENAME), lambda f: f.write(text), binary=False)


def load_config(path: str) -> Munch:
    """Read a config.yaml written by save_config (or a folder holding one) as a Munch."""
    if os.path.isdir(path):
        path = os.path.join(path, CONFIG_FILENAME)
    if not os.path.isfile(path):
        raise UserError(f"config file '{path}' does not exist; check the path")
    data = _read_yaml(path, 'fix or delete it')
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must be a mapping of 'key: value' lines")
    return Munch(data)
