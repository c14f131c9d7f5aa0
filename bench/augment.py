"""Throughput of the `default` augmentation preset: fastxfer's fused batch pipeline versus the same operations per
image with torchvision.transforms.v2 in a DataLoader (and stock fastai `aug_transforms` for reference).

Every variant starts from the same decoded, resized uint8 images in memory (what item transforms deliver) and
ends with a float batch in [0, 1]; decoding and Normalize are left out of all of them.

    .venv/bin/python bench/augment.py [--device cpu|cuda] [--bs 64] [--size 224] [--batches 6] [--repeats 3]

Prints a table on stderr and one JSON object as the last line of stdout. Two figures per variant: images per
second of wall-clock time, and images per CPU-second (user + system time of this process and of its DataLoader
workers), which depends much less on what else runs on a shared machine.

On an oversubscribed CPU, OpenMP threads that spin while waiting burn the time slices the work needs; the
benchmark therefore sets OMP_WAIT_POLICY=PASSIVE for all variants unless the variable is already set.
"""
import argparse, json, os, sys, time
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
from datetime import datetime, timezone
import torch

def images(n, size):
    "n uint8 CHW images: the shared pet photos when present (resized), else random smooth images."
    from fastxfer.core import shared_data
    from PIL import Image
    import numpy as np
    pets = shared_data('pets/images')
    if pets is not None:
        files = sorted(pets.glob('*.jpg'))[:n]
        ims = [torch.from_numpy(np.asarray(Image.open(f).convert('RGB').resize((size, size), Image.BILINEAR)).copy()).permute(2, 0, 1)
               for f in files]
        while len(ims) < n: ims += ims[:n-len(ims)]
        return torch.stack(ims), 'shared pets photos'
    g = torch.Generator().manual_seed(0)
    small = torch.rand(n, 3, size//8, size//8, generator=g)
    x = torch.nn.functional.interpolate(small, size=(size, size), mode='bilinear')
    return (x*255).round().to(torch.uint8), 'synthetic'

class Items(torch.utils.data.Dataset):
    def __init__(self, x, tfm=None): self.x, self.tfm = x, tfm
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return self.x[i] if self.tfm is None else self.tfm(self.x[i])

def v2_pipeline():
    "The `default` preset's operations, per image, with torchvision.transforms.v2 (bilinear like fastai)."
    from torchvision.transforms import v2, InterpolationMode as IM
    B = IM.BILINEAR
    return v2.Compose([
        v2.RandomHorizontalFlip(0.5),
        v2.RandomPerspective(distortion_scale=0.2, p=0.75, interpolation=B),
        v2.RandomApply([v2.RandomRotation(10, interpolation=B)], p=0.75),
        v2.RandomApply([v2.RandomAffine(degrees=0, scale=(1.0, 1.1), interpolation=B)], p=0.75),
        v2.RandomApply([v2.ColorJitter(brightness=0.2)], p=0.75),
        v2.RandomApply([v2.ColorJitter(contrast=0.2)], p=0.75),
        v2.ToDtype(torch.float32, scale=True)])

def _cpu():
    t = os.times(); return t.user + t.system + t.children_user + t.children_system

def time_loader(dl, after=None, device='cpu', batches=5):
    """(images per second, images per CPU-second) through `dl` (+ `after` on each batch).

    Wall time starts after the first batch (so DataLoader workers have started and prefetched: generous to the
    per-image pipeline); CPU time covers the whole run, workers included (they are joined before it is read)."""
    c0 = _cpu()
    it = iter(dl)
    b = next(it).to(device); y = after(b) if after else b
    if device.startswith('cuda'): torch.cuda.synchronize()
    n, t = b.shape[0], time.perf_counter()
    for _ in range(batches):
        b = next(it).to(device, non_blocking=True)
        y = after(b) if after else b
    if device.startswith('cuda'): torch.cuda.synchronize()
    wall = time.perf_counter() - t
    del it                                         # joins the workers, so their CPU time is counted
    assert y.dtype == torch.float32 and y.shape[0] == b.shape[0]
    return b.shape[0]*batches/wall, n*(batches + 1)/max(_cpu() - c0, 1e-9)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cpu'); ap.add_argument('--bs', type=int, default=64)
    ap.add_argument('--size', type=int, default=224); ap.add_argument('--batches', type=int, default=5)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--workers', default='2', help='DataLoader workers to try for the per-image pipeline')
    ap.add_argument('--threads', type=int, default=None, help='torch intra-op threads in the main process (default: torch default)')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    from fasttransform import Pipeline
    from fastai.torch_core import TensorImage
    from fastai.data.transforms import IntToFloatTensor
    from fastai.vision.augment import aug_transforms
    from fastxfer.augment.image import aug_preset, FastAug
    load0 = os.getloadavg()
    n = a.bs*(a.batches + 1)
    x, source = images(n, a.size)
    dev = a.device
    fused = Pipeline([IntToFloatTensor(), *aug_preset('default')], split_idx=0)
    stock = Pipeline([IntToFloatTensor(), *aug_transforms()], split_idx=0)
    assert isinstance(aug_preset('default')[0], FastAug)
    variants = {
        'fastxfer default preset (fused batch)': lambda: time_loader(torch.utils.data.DataLoader(Items(x), a.bs), lambda b: fused(TensorImage(b)), dev, a.batches),
        'fastai aug_transforms (batch)': lambda: time_loader(torch.utils.data.DataLoader(Items(x), a.bs), lambda b: stock(TensorImage(b)), dev, a.batches),
    }
    for w in [int(v) for v in a.workers.split(',') if v.strip()]:
        variants[f'torchvision v2 per image, {w} workers'] = (lambda w=w: time_loader(
            torch.utils.data.DataLoader(Items(x, v2_pipeline()), a.bs, num_workers=w, persistent_workers=False), None, dev, a.batches))
    for k, f in variants.items(): f()                  # warm-up: first calls, allocator, worker start-up code paths
    res = {k: [] for k in variants}; cpu = {k: [] for k in variants}
    for r in range(a.repeats):                          # interleaved, so that every variant sees the same load
        for k, f in variants.items():
            torch.manual_seed(r); w_, c_ = f(); res[k].append(w_); cpu[k].append(c_)
    med = lambda v: sorted(v)[len(v)//2]
    wall = {k: med(v) for k, v in res.items()}; eff = {k: med(v) for k, v in cpu.items()}
    pk = [k for k in variants if k.startswith('torchvision')]
    best_pi = max(pk, key=lambda k: wall[k]); F_ = 'fastxfer default preset (fused batch)'; S_ = 'fastai aug_transforms (batch)'
    out = dict(bench='augment', time=datetime.now(timezone.utc).isoformat(timespec='seconds'), device=dev,
               cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'),
               bs=a.bs, size=a.size, images=source, batches=a.batches, repeats=a.repeats,
               loadavg_before=load0, loadavg_after=os.getloadavg(),
               images_per_s={k: round(v, 1) for k, v in wall.items()},
               images_per_cpu_s={k: round(v, 1) for k, v in eff.items()},
               all_runs_images_per_s={k: [round(v, 1) for v in vs] for k, vs in res.items()},
               speedup_vs_per_image=round(wall[F_]/wall[best_pi], 2),
               cpu_efficiency_vs_per_image=round(eff[F_]/eff[best_pi], 2),
               speedup_vs_fastai=round(wall[F_]/wall[S_], 2))
    w = max(map(len, wall))
    print(f"device {dev}, batch {a.bs}, {a.size} px, load average {load0[0]:.2f} -> {out['loadavg_after'][0]:.2f} (median of {a.repeats})", file=sys.stderr)
    print(f"{'variant':<{w}}  images/s  images/CPU-s", file=sys.stderr)
    for k in wall: print(f'{k:<{w}}  {wall[k]:8.1f}  {eff[k]:12.1f}', file=sys.stderr)
    print(json.dumps(out))

if __name__ == '__main__':
    main()
