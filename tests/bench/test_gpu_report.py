"""bench/gpu_report.py: its --smoke run is the CI check of the GPU report's code paths (the
benchmark fixes it relies on: tests/bench/test_train_speed.py)."""
import json
import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from bench import gpu_report
from core.errors import UserError

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors: one thread (conftest)


def test_missing_official_checkout_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match='--official .*no core/solver.py there') as e:
        gpu_report.parse(['--smoke', '--official', str(tmp_path / 'nowhere')])
    assert '\n' not in str(e.value)


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
    assert report['loader']['same_as_cpu'] is True  # the device path of the batches (the CPU itself here)
    ev = report['eval']
    assert ev['generated_images'] == 2 * 2 * 2 and ev['max_rel_diff'] <= 1e-6
    assert set(ev['tf32_during_eval']) == {'fid', 'lpips'}
    for net, flags in ev['tf32_during_eval'].items():  # FID and LPIPS features in full float32
        assert flags == {'cuda.matmul.allow_tf32': False, 'cudnn.allow_tf32': False}, net
    for name in names:
        assert f'| {name} |' in markdown
