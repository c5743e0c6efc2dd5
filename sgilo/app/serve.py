"""`sgilo serve`: a local web page (Gradio, the usual way to demo a model; optional extra ``pip install sgilo[app]``)
around `sgilo.app.restore.restore_photo`.

The page: upload a photo, pick the task (and draw the scratches on the photo, or upload a mask: white = observed),
press *Restore*; it shows the restored photo, a few posterior samples of the (first) face and its per-pixel std map
with a colour bar, plus the labelled sheet, with Gradio's progress indicator while SGILO runs. Models are loaded once.
Everything runs on this machine; nothing is fetched (Gradio's analytics are switched off).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from sgilo.app.restore import TASKS, RestoreTask, restore_config, restore_photo
from sgilo.errors import UserError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _gradio():
    try:
        import gradio as gr
    except ImportError:
        raise UserError("sgilo serve needs Gradio: pip install 'sgilo[app]'") from None
    return gr


# ----------------------------------------------------------------------------
# The mask of the page: drawn strokes on the photo (any non-transparent pixel of the editor's layers = missing) or an
# uploaded mask image (white = observed).


def mask_from_inputs(editor, mask_file, hw: tuple[int, int]) -> np.ndarray | None:
    """uint8 [H, W] mask (255 = observed) or None when nothing was drawn or uploaded."""
    from PIL import Image
    if mask_file is not None:
        m = np.asarray(Image.open(mask_file).convert("L"))
        if m.shape != hw:
            raise UserError(f"mask: expected {hw[1]}x{hw[0]} pixels like the photo, got {m.shape[1]}x{m.shape[0]}")
        return np.where(m >= 128, 255, 0).astype(np.uint8)
    layers = (editor or {}).get("layers") or []
    drawn = np.zeros(hw, bool)
    for layer in layers:
        a = np.asarray(layer)
        if a.ndim == 3 and a.shape[2] == 4 and a.shape[:2] == hw:
            drawn |= a[..., 3] > 0
    return None if not drawn.any() else np.where(drawn, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# One request: write the inputs to a temporary folder, restore, return the images.


def run_restore(photo, task: str, editor, mask_file, sigma, kernel_sigma, aligned: bool, models, config,
                progress=None):
    from PIL import Image
    if photo is None:
        raise UserError("upload a photo first")
    if task not in TASKS:
        raise UserError(f"task: expected one of {list(TASKS)}, got {task!r}")
    work = Path(tempfile.mkdtemp(prefix="sgilo-serve-"))
    arr = np.asarray(photo)
    path = work / "photo.png"
    Image.fromarray(arr.astype(np.uint8)).save(path)
    mask = None
    if task == "inpaint-mask":
        m = mask_from_inputs(editor, mask_file, arr.shape[:2])
        if m is None:
            raise UserError("inpaint-mask: draw over the damaged parts of the photo or upload a mask")
        mask = str(work / "mask.png")
        Image.fromarray(m).save(mask)
    spec = RestoreTask(task, mask=mask, sigma=float(sigma) if sigma else None,
                       kernel_sigma=float(kernel_sigma) if task == "deblur" else None)
    if progress is not None:
        progress(0.1, desc="finding faces and sampling the posterior (SGILO)")
    rep = restore_photo(path, work / "out", spec, models, config, aligned=aligned)
    out = work / "out"
    samples = sorted(str(p) for p in out.glob("face0_sample_*.png"))
    std = out / "face0_std.png"
    res = ", ".join(f"{f['residual']:.3f}" for f in rep["faces"])
    info = f"{len(rep['faces'])} face(s); residual ‖A x̂ − y‖/‖y‖: {res}"
    return (str(out / "restored.png"), samples, str(std) if std.is_file() else None, str(out / "sheet.png"), info)


# ----------------------------------------------------------------------------
# The page.


def build_app(model: str = "default", prior: str = "default", steps: tuple[int, ...] | None = None,
              samples: int = 4, device: str | None = None):
    """The Gradio Blocks app (not launched)."""
    gr = _gradio()
    from sgilo.app.models import load_models
    models = load_models(model, prior, device or "cpu")
    config = restore_config(model, steps=steps, samples=samples)

    def handler(photo, task, editor, mask_file, sigma, kernel_sigma, aligned, progress=gr.Progress()):  # noqa: B008
        try:
            return run_restore(photo, task, editor, mask_file, sigma, kernel_sigma, aligned, models, config,
                               progress)
        except (UserError, ValueError) as e:
            raise gr.Error(str(e)) from None

    with gr.Blocks(title="sgilo restore", analytics_enabled=False) as app:
        gr.Markdown("## sgilo restore — restore a face with posterior samples and their uncertainty\n"
                    "Upload a photo (it *is* the degraded observation), pick the task, press **Restore**.")
        with gr.Row():
            with gr.Column():
                photo = gr.Image(type="numpy", label="photo", elem_id="photo", sources=["upload"])
                task = gr.Radio(list(TASKS), value="superres", label="task", elem_id="task")
                editor = gr.ImageEditor(type="numpy", label="inpaint-mask: draw over the damaged parts",
                                        elem_id="mask_editor", layers=True)
                mask_file = gr.Image(type="filepath", label="…or upload a mask (white = observed)",
                                     elem_id="mask_file", sources=["upload"])
                sigma = gr.Number(value=0, label="noise std σ in [-1, 1] units (0: none; denoise estimates it)")
                kernel_sigma = gr.Number(value=1.0, label="deblur: blur std (photo pixels)")
                aligned = gr.Checkbox(value=False, label="the photo is an aligned face crop (skip detection)")
                run = gr.Button("Restore", variant="primary", elem_id="run")
            with gr.Column():
                restored = gr.Image(type="filepath", label="restored", elem_id="restored", interactive=False)
                info = gr.Textbox(label="result", elem_id="info", interactive=False)
                gallery = gr.Gallery(label="posterior samples (face 1)", elem_id="samples", columns=4)
                std = gr.Image(type="filepath", label="uncertainty: per-pixel posterior std", elem_id="std",
                               interactive=False)
                sheet = gr.Image(type="filepath", label="sheet", elem_id="sheet", interactive=False)
        photo.change(lambda p: p, inputs=photo, outputs=editor)
        run.click(handler, inputs=[photo, task, editor, mask_file, sigma, kernel_sigma, aligned],
                  outputs=[restored, gallery, std, sheet, info])
    return app


def launch(host: str = "127.0.0.1", port: int = 7860, block: bool = True, **kw):
    """Build and start the page on http://HOST:PORT (``block=False``: return the running app)."""
    app = build_app(**kw)
    app.queue()
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
               show_error=True, quiet=not block)
    return app
