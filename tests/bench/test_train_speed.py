"""bench/train_speed.py: the fixes the GPU report relies on (the official loop unwrapped from
DataParallel, compiled rows that pass the recompile limit fail loudly; docs/first_gpu_run.md
item 10)."""
import pytest
import torch
from munch import Munch

from bench import train_speed

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors: one thread (conftest)


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


def test_project_rows_ask_dynamo_to_fail_at_the_limit():
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=False):
        opt = train_speed.parse(['--device', 'cpu', '--dim_in', '8', '--max_conv_dim', '32'])
        train_speed.Project(train_speed.train_args(opt, 32, 2, compile_=True), torch.device('cpu'),
                            compile_options=dict(backend='eager'))
        assert torch._dynamo.config.fail_on_recompile_limit_hit is True


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
