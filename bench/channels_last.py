"""How long one training step of EfficientNet-Lite0 takes in each memory format (contiguous NCHW against channels-last
NHWC) and precision (float32, bfloat16 autocast): a plain step, a step on a doubled batch (adversarial training keeps
the clean images beside their adversarial versions) and the three input gradients of a PGD-3 attack. Batch norm in eval
mode, as adversarial fine-tuning has it. JSON out (one object, the last line); a line a setting on stderr.

    .venv/bin/python bench/channels_last.py                 # batch 64, 128 px, 5 timed repeats after one warm-up
    .venv/bin/python bench/channels_last.py --size 224 --bs 32

Run it alone on the machine; the load average and CPU model are written with the figures.
"""
import argparse, copy, json, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import cpu_model   # bench/machine.py, beside this script


def seconds(f, n) -> float:
    "Median seconds of `n` calls of `f` after one warm-up call."
    f(); ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def network():
    "EfficientNet-Lite0's offline body, pooled, with a two-class linear head."
    import torch.nn as nn
    from fastxfer.backbones import create_body, num_features
    body = create_body('efficientnet_lite0')[0]
    return nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(num_features(body), 2))


def timings(net, x, y, fmt, bf16, n) -> dict:
    "Seconds of a step, a doubled-batch step and a PGD-3 attack for one memory format and precision."
    import torch, torch.nn.functional as F
    from fastxfer.augment.adversarial import bn_eval, pgd
    m = copy.deepcopy(net).to(memory_format=fmt); x = x.contiguous(memory_format=fmt)
    opt = torch.optim.Adam(m.parameters(), 1e-4)
    def step(a, b):
        opt.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16): loss = F.cross_entropy(m(a).float(), b)
        loss.backward(); opt.step()
    x2, y2 = torch.cat([x, x]).contiguous(memory_format=fmt), torch.cat([y, y])
    m.train(); bn_eval(m)
    out = dict(step=seconds(lambda: step(x, y), n), step_doubled_batch=seconds(lambda: step(x2, y2), n))
    m.eval()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16): out['pgd3_attack'] = seconds(lambda: pgd(m, x, y, 2., steps=3), n)
    return {k: round(v, 3) for k, v in out.items()}


def main(a):
    import torch
    load = os.getloadavg(); torch.manual_seed(0)
    net, runs = network(), []
    x, y = torch.randn(a.bs, 3, a.size, a.size), torch.randint(0, 2, (a.bs,))
    for name, fmt in (('contiguous', torch.contiguous_format), ('channels_last', torch.channels_last)):
        for bf16 in (False, True):
            r = dict(memory_format=name, precision='bf16' if bf16 else 'fp32', **timings(net, x, y, fmt, bf16, a.repeats))
            runs.append(r); print(r, file=sys.stderr, flush=True)
    print(json.dumps(dict(bench='channels_last', size=a.size, bs=a.bs, repeats=a.repeats, runs=runs, load_average_before=[round(v, 2) for v in load],
                          cpu=cpu_model(), torch_threads=torch.get_num_threads(), torch=torch.__version__)))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--size', type=int, default=128); ap.add_argument('--bs', type=int, default=64)
    ap.add_argument('--repeats', type=int, default=5)
    main(ap.parse_args())
