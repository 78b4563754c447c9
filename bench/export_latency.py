"""CPU latency per image, PyTorch vs onnxruntime, of the exported networks at 256 px.

Builds the paper's networks (AFHQ: w_hpf 0; CelebA-HQ: w_hpf 1, with the FAN masks),
exports them with ``core.use.export.export_onnx`` into a temporary folder and times one
latent-guided translation of one image (mapping network, [FAN masks,] generator) and the
style encoder, in PyTorch and in onnxruntime with the same number of threads. Weights are
PyTorch's initial ones: latency does not depend on them.

    python bench/export_latency.py                      # both models, batch 1, 2 threads
    python bench/export_latency.py --model afhq --threads 4 --repeats 20
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.nn.fan import fan_masks  # noqa: E402
from core.nn.networks import ModelConfig, build_networks  # noqa: E402
from core.use.export import export_onnx  # noqa: E402

MODELS = {'afhq': ModelConfig(img_size=256, num_domains=3, w_hpf=0),
          'celeba_hq': ModelConfig(img_size=256, num_domains=2, w_hpf=1)}


def timed(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def pipelines(nets, sess, cfg, batch):
    """{name: (pytorch fn, onnxruntime fn)} on the same inputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, cfg.img_size, cfg.img_size, generator=g) * 2 - 1
    y = torch.zeros(batch, dtype=torch.long)
    z = torch.randn(batch, cfg.latent_dim, generator=g)
    xn, yn, zn = x.numpy(), y.numpy(), z.numpy()

    @torch.no_grad()
    def torch_translate():
        masks = fan_masks(nets, cfg.w_hpf, x)
        return nets.generator(x, nets.mapping_network(z, y), masks=masks)

    def ort_translate():
        s = sess['mapping_network'].run(None, {'z': zn, 'y': yn})[0]
        feeds = {'x': xn, 's': s}
        if cfg.w_hpf > 0:
            feeds.update(zip(('masks0', 'masks1'), sess['fan_masks'].run(None, {'x': xn})))
        return sess['generator'].run(None, feeds)[0]

    @torch.no_grad()
    def torch_style():
        return nets.style_encoder(x, y)

    def ort_style():
        return sess['style_encoder'].run(None, {'x': xn, 'y': yn})[0]

    name = 'translate (F' + (' + FAN masks' if cfg.w_hpf > 0 else '') + ' + G)'
    return {name: (torch_translate, ort_translate), 'style encoder (E)': (torch_style, ort_style)}


def bench(model, threads, repeats, batch):
    import onnxruntime as ort
    cfg = MODELS[model]
    torch.manual_seed(0)
    nets = build_networks(cfg)
    torch.set_num_threads(threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as folder:
        t = time.perf_counter()
        meta = export_onnx(nets, cfg, folder)
        print(f'{model}: exported in {time.perf_counter() - t:.0f} s')
        sess = {name: ort.InferenceSession(os.path.join(folder, g['file']), opts, providers=['CPUExecutionProvider'])
                for name, g in meta['graphs'].items()}
        for name, (fn_torch, fn_ort) in pipelines(nets, sess, cfg, batch).items():
            err = float(np.abs(fn_torch().numpy() - fn_ort()).max())
            med_t, min_t = timed(fn_torch, repeats)
            med_o, min_o = timed(fn_ort, repeats)
            print(f'{model} {name}: per image PyTorch {1000 * med_t / batch:.0f} ms (min {1000 * min_t / batch:.0f}), '
                  f'onnxruntime {1000 * med_o / batch:.0f} ms (min {1000 * min_o / batch:.0f}), '
                  f'ratio {med_t / med_o:.2f}x, max abs diff {err:.1e}')


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', choices=['afhq', 'celeba_hq', 'both'], default='both')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--batch', type=int, default=1)
    a = p.parse_args()
    print(f'torch {torch.__version__}, {a.threads} threads, batch {a.batch}, median of {a.repeats} runs, '
          f'{os.cpu_count()} CPUs visible')
    for model in (['afhq', 'celeba_hq'] if a.model == 'both' else [a.model]):
        bench(model, a.threads, a.repeats, a.batch)


if __name__ == '__main__':
    main()
