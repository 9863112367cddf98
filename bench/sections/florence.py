"""Florence-2-base captions."""
from __future__ import annotations

from ..common import Section, measure
from .base import Ctx, _fs, _pil, _quiet_transformers, _unload_all, make_images


# ---- Florence-2 ------------------------------------------------------------------------------------------
def section_florence(ctx: Ctx, sec: Section) -> None:
    import torch

    from safecut.engines import florence

    from ..naive import NaiveFlorence

    _quiet_transformers()
    path = ctx.paths["florence"]
    T = 8 if ctx.quick else ctx.florence_tokens
    B = ctx.florence_batch
    images = make_images(B, ctx.size, seed=5)
    runs = ctx.runs if ctx.quick else ctx.heavy_runs
    task = "more detailed caption"
    # naive: load + one image at a time + unload, per node execution
    naive = NaiveFlorence(path, T, florence.task_token(task))
    nst = measure(lambda: naive(images), runs, warmup=0 if not ctx.quick else 1)
    n_loads = naive.load_seconds
    n_gen = naive.generated
    # ours: the engine's batched generate on a loaded model (same token count forced)
    _unload_all()
    fm = florence.load_model(path, "cpu", "fp32")
    fm.model.generation_config.min_new_tokens = T
    gen_lens = []

    def ours_call():
        caps = florence.generate_captions(fm, images, task, max_new_tokens=T, num_beams=3, batch_size=B)
        return caps

    ost = measure(ours_call, runs, warmup=1 if ctx.quick else 0)
    with torch.inference_mode():  # token count check (same prompt, one image)
        inputs = fm.processor(text=[florence.task_token(task)], images=[_pil(images[0])],
                              return_tensors="pt")
        ids = fm.model.generate(**inputs, max_new_tokens=T, num_beams=3, do_sample=False)
        gen_lens.append(int(ids.shape[-1]))
    fm.close()
    # the same engine path with bf16 weights (caption_images maps bf16 to fp32 on CPU today: an option to weigh)
    bst = None
    try:
        import torch as _t

        bf16_ok = bool(_t.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        bf16_ok = False
    if bf16_ok:
        fb = florence.load_model(path, "cpu", "bf16")
        fb.model.generation_config.min_new_tokens = T
        bst = measure(lambda: florence.generate_captions(fb, images, task, max_new_tokens=T, num_beams=3,
                                                         batch_size=B), runs, warmup=1 if ctx.quick else 0)
        fb.close()
    # the engine entry point twice: repeat call load share
    r1 = florence.caption_images(images[:1], path, task=task, device="CPU", max_new_tokens=T)
    r2 = florence.caption_images(images[:1], path, task=task, device="CPU", max_new_tokens=T)
    _unload_all()
    per_naive = nst["median"] / B
    per_ours = ost["median"] / B
    res = {"naive": nst, "ours": ost, "naive_load": n_loads, "naive_generated_lengths": n_gen,
           "ours_generated_lengths": gen_lens, "tokens": T, "batch": B, "per_image_naive": per_naive,
           "per_image_ours": per_ours, "speedup": per_naive / per_ours, "engine_first_load": r1.load_seconds,
           "engine_repeat_load": r2.load_seconds, "engine_repeat_seconds": r2.seconds,
           "params": ctx.builds.get("florence", {}).get("params")}
    sec.data.update(res)
    ctx.shared["florence"] = res
    sec.row(what=f"naive ({B} images one at a time, do_sample, 3 beams, load+unload per run)",
            value=f"{per_naive:.2f} s/img", detail=f"batch total {_fs(nst)}; load {n_loads:.2f} s of it")
    sec.row(what=f"SafeCut (florence.generate_captions, batch {B}, 3 beams, inference_mode, SDPA, cached model)",
            value=f"{per_ours:.2f} s/img", detail=f"batch total {_fs(ost)}; ×{per_naive / per_ours:.2f} per image")
    if bst is not None:
        res["bf16"] = bst
        res["per_image_bf16"] = bst["median"] / B
        sec.row(what=f"SafeCut engine path with bf16 weights (this CPU has AVX512-BF16; caption_images runs fp32 "
                     f"on CPU today)", value=f"{bst['median'] / B:.2f} s/img",
                detail=f"batch total {_fs(bst)}; ×{per_naive / (bst['median'] / B):.2f} per image vs naive")
    sec.row(what="SafeCut caption_images repeat call (1 image): load share", value=f"{r2.load_seconds:.3f} s",
            detail=f"of {r2.seconds:.2f} s; first call loaded in {r1.load_seconds:.2f} s")
    sec.notes.append(f"Both generate exactly {T} new tokens per caption (min_new_tokens = max_new_tokens): random "
                     f"weights never emit EOS, the cap equalises the work. Task <MORE_DETAILED_CAPTION>, images "
                     f"{ctx.size[1]}×{ctx.size[0]} → 768² ({ctx.builds.get('florence', {}).get('image_tokens', '?')} "
                     f"image tokens).")
