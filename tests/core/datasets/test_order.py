"""core/datasets/order.py: balanced sampling, seeds, the same order for the same seed."""
import torch
from helpers import DATA_SIZE as S
from helpers import coded_dataset, decode, noise_dataset

from core.datasets.order import BalancedSampler
from core.datasets.pipeline import get_test_loader, get_train_loader

# ----------------------------------------------------------------------------- balanced sampling and seeds

def test_balanced_sampling_on_imbalanced_set(tmp_path):
    root = coded_dataset(tmp_path, {'few': 10, 'many': 90})
    loader = get_train_loader(root, img_size=8, batch_size=10, prob=0.0, num_workers=0, seed=5)
    labels = torch.cat([y for _ in range(10) for x, y in loader])  # 10 epochs, 1000 draws
    assert labels.numel() == 1000
    frac = labels.float().mean().item()
    assert 0.42 < frac < 0.58, frac  # uniform file sampling would give 0.9
    # the sampler itself over many epochs
    sampler = BalancedSampler([0] * 10 + [1] * 90, seed=11)
    idx = torch.cat([sampler.plan(e)[0] for e in range(100)])
    frac = (idx >= 10).float().mean().item()
    assert abs(frac - 0.5) < 0.02, frac
    assert sampler.replacement and sampler.num_samples == 100


def test_same_seed_same_batches_other_seed_other_batches(tmp_path):
    root = noise_dataset(tmp_path, {'a': 6, 'b': 6})

    def batches(seed, which):
        loader = get_train_loader(root, which, img_size=12, batch_size=4, prob=0.5, num_workers=0, seed=seed)
        return [torch.cat([t.flatten().float() for t in b]) for _ in range(2) for b in loader]

    for which in ('source', 'reference'):
        a, b, c = batches(7, which), batches(7, which), batches(8, which)
        assert all(torch.equal(p, q) for p, q in zip(a, b))
        assert not all(torch.equal(p, q) for p, q in zip(a, c))
    # the augmentation really is random: crops and flips vary between epochs
    loader = get_train_loader(root, img_size=12, batch_size=12, prob=1.0, num_workers=0, seed=7)
    loader.sampler.set_epoch(0)
    e0 = next(iter(loader))[0]
    loader.sampler.set_epoch(1)
    e1 = next(iter(loader))[0]
    assert not torch.equal(e0, e1)


def test_seed_from_generator_or_torch_seed(tmp_path):
    root = noise_dataset(tmp_path, {'a': 4, 'b': 4})
    mk = lambda **kw: next(iter(get_train_loader(root, img_size=S, batch_size=4, num_workers=0, **kw)))[0]
    assert torch.equal(mk(generator=torch.Generator().manual_seed(1)),
                       mk(generator=torch.Generator().manual_seed(1)))
    torch.manual_seed(123)
    a = mk()
    torch.manual_seed(123)
    assert torch.equal(a, mk())


# ----------------------------------------------------------------------------- the test loader's order

def test_test_loader_order(tmp_path):
    root = coded_dataset(tmp_path, {'a': 3, 'b': 4})
    plain = get_test_loader(root, img_size=S, batch_size=7, shuffle=False, num_workers=0)
    x, y = next(iter(plain))
    assert decode(x) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)]
    shuffled = get_test_loader(root, img_size=S, batch_size=7, shuffle=True, num_workers=0, seed=3)
    xs, ys = next(iter(shuffled))
    assert sorted(decode(xs)) == decode(x) and decode(xs) != decode(x)
    assert [d for d, _ in decode(xs)] == ys.tolist()
