"""bench/gpu_report.py (its --smoke run is the CI check of the GPU report's code paths) and the
benchmark fixes it relies on in bench/train_speed.py."""
import json
import subprocess
import sys

import pytest
import torch
from munch import Munch

from bench import gpu_report, train_speed
from core.errors import UserError
from helpers import ROOT

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors: one thread (conftest)


def test_missing_official_checkout_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match='--official .*no core/solver.py there') as e:
        gpu_report.parse(['--smoke', '--official', str(tmp_path / 'nowhere')])
    assert '\n' not in str(e.value)


def test_official_networks_are_taken_out_of_data_parallel():
    nets = Munch(generator=torch.nn.DataParallel(torch.nn.Linear(2, 2)), fan=torch.nn.Linear(2, 2))
    plain = train_speed.unwrap(nets)
    assert plain.generator is nets.generator.module and plain.fan is nets.fan
    assert not any(isinstance(m, torch.nn.DataParallel) for m in plain.values())


def test_a_compiled_row_past_the_recompile_limit_fails_loudly():
    """Past torch.compile's recompile limit dynamo would run the function eager without a word;
    with the bench's setting it raises, and the row stops with a message naming the limit."""
    torch._dynamo.reset()
    fn = torch.compile(lambda x: x * 2, backend='eager', dynamic=False)
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        with pytest.raises(SystemExit, match='recompile limit'):
            with train_speed.loud_compile('tiny row'):
                for n in (1, 2, 3):  # a new static shape each call: a recompile each
                    fn(torch.ones(n))
    torch._dynamo.reset()


def test_project_rows_ask_dynamo_to_fail_at_the_limit(monkeypatch):
    monkeypatch.setattr(torch._dynamo.config, 'fail_on_recompile_limit_hit', False)
    opt = train_speed.parse(['--device', 'cpu', '--dim_in', '8', '--max_conv_dim', '32'])
    train_speed.Project(train_speed.train_args(opt, 32, 2, compile_=True), torch.device('cpu'),
                        compile_options=dict(backend='eager'))
    assert torch._dynamo.config.fail_on_recompile_limit_hit is True


@pytest.mark.slow
def test_smoke_report_runs_every_section(tmp_path):
    out = tmp_path / 'report'
    proc = subprocess.run([sys.executable, 'bench/gpu_report.py', '--smoke', '--out', str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'skipped: official training row (no --official PATH given)' in proc.stdout
    report = json.loads((out / 'gpu_report.json').read_text())
    markdown = (out / 'gpu_report.md').read_text()
    assert report['smoke'] is True and report['sanity']['versions']['torch'] == torch.__version__
    ddp = report['sanity']['ddp']
    assert ddp['backend'] == 'gloo' and set(ddp['cases']) == {'0', '1'}
    for w_hpf, case in ddp['cases'].items():
        assert case['ok'], f'DDP smoke, w_hpf {w_hpf}: {case}'
    names = [r['name'] for r in report['training']['rows']]
    assert names == ['project fp32', 'project bf16', 'project bf16+channels_last', 'project bf16+channels_last+compile']
    for r in report['training']['rows']:
        assert r['its'] > 0 and r['ips'] == pytest.approx(2 * r['its'])
        assert r['frac_bf16'] > 0
        assert (r['count'] is None) == r['name'].endswith('compile')  # counted: the eager rows
        if r['count']:
            assert r['count']['peak'] > r['count']['params'] > 0
    assert 'compile_s' in report['training']['rows'][-1]
    assert report['loader']['source_images_s'] > 0 and report['loader']['workers'] >= 1
    ev = report['eval']
    assert ev['generated_images'] == 2 * 2 * 2 and ev['max_rel_diff'] <= 1e-6
    assert set(ev['tf32_during_eval']) == {'fid', 'lpips'}
    for net, flags in ev['tf32_during_eval'].items():  # FID and LPIPS features in full float32
        assert flags == {'cuda.matmul.allow_tf32': False, 'cudnn.allow_tf32': False}, net
    for name in names:
        assert f'| {name} |' in markdown


def test_a_row_past_the_recompile_limit_is_reported_and_the_others_are_timed():
    opt = train_speed.parse(['--device', 'cpu', '--dim_in', '8', '--max_conv_dim', '32', '--warmup', '1', '--iters', '1',
                             '--rounds', '1', '--no_flops'])
    failures, lines = [], []
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        rows = train_speed.measure(opt, torch.device('cpu'), 32, 2, compile_options=dict(backend='eager'),
                                   log=lines.append, combos=[('none', 0, 0, 0), ('none', 0, 1, 0)], failures=failures)
    torch._dynamo.reset()
    assert [r['name'] for r in rows] == ['project fp32']
    assert len(failures) == 1 and 'recompile limit' in failures[0]['error']
    assert any(line.startswith('# FAILED') for line in lines)
