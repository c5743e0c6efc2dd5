"""SWD (×10³, ProGAN multi-scale) of single outputs at inpaint-random 1 % against held-out test/ faces, at the
equal budget of the headline (300 NFE, K = 3), beside the generator's unconditional samples and real train/ faces.
Usage: python realism_swd.py ZIP N_FACES OUT.json [SOLVERS] (comma-separated; default csgm,ilo,sgilo,sgilo-gauss)"""
import json, sys, time
import torch
from sgilo.app.models import load_models
from sgilo.bench.presets import TASK_PRESETS, preset_params
from sgilo.bench.run import BenchConfig, image_seed, measure_images, run_solver, solver_configs
from sgilo.bench.tasks import make_operator
from sgilo.metrics.swd import swd
from sgilo.utils.datasets import load_image_set, to_float

zip_path, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
solvers = tuple(sys.argv[4].split(",")) if len(sys.argv) > 4 else ("csgm", "ilo", "sgilo", "sgilo-gauss")
task = "inpaint-random-1"
cfg = BenchConfig(data=zip_path, out="/tmp/unused", tasks=(task,), solvers=solvers, budget=300, chains=3)
configs = solver_configs(cfg)
models = load_models("default", "default", "cpu")
G = models[0]
x_all = to_float(load_image_set(zip_path, G.img_resolution, "test", limit=n + 3 * n))   # [4n, 3, 64, 64]
x, ref = x_all[:n], x_all[n:]                                       # reconstruct n faces; 3n other test faces as reference
shape = tuple(x.shape[1:])
op = make_operator(TASK_PRESETS[task].task, shape, 0, **preset_params(task, shape))
outputs = {s: [] for s in solvers}
t0 = time.time()
for start in range(0, n, 8):
    idx = list(range(start, min(n, start + 8)))
    y = measure_images(op, x[idx], 0, task, idx)
    for s in solvers:
        o = run_solver(s, y, op, models, configs[s], 0, None, seeds=[image_seed(0, task, i) for i in idx], cache={})
        outputs[s].append(o.outputs.flatten(0, 1).cpu())            # [K·B, 3, 64, 64] single outputs
    print(f"{start + len(idx)}/{n} faces, {time.time() - t0:.0f} s", flush=True)
rows = {s: torch.cat(v) for s, v in outputs.items()}
with torch.no_grad():
    rows["generator, unconditional"] = G(torch.randn([3 * n, G.z_dim], generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
rows["real train/ faces"] = to_float(load_image_set(zip_path, G.img_resolution, "train", limit=3 * n))
report = {name: swd(imgs.float(), ref.float()) for name, imgs in rows.items()}
report["_info"] = {"task": task, "faces": n, "images_per_row": 3 * n, "reference": f"{3 * n} other test/ faces",
                   "budget": 300, "K": 3, "seconds": round(time.time() - t0, 1)}
json.dump(report, open(out, "w"), indent=1)
for k, v in report.items():
    print(k, v)
