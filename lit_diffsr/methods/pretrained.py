"""`model=pretrained`: a method exactly as its checkpoint describes it (architecture, diffusion, class).

For checkpoints made by `python -m lit_diffsr convert` (published weights) or by `fit` elsewhere: `predict`,
`validate` and `test` run them without restating their network in a model config, e.g.
    python -m lit_diffsr predict model=pretrained model.path=pretrained/256x256_diffusion_uncond.ckpt
"""

from __future__ import annotations

from pathlib import Path

from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.base import DiffusionMethod, as_dict, load_method
from lit_diffsr.methods.configs import reject_unknown_keys
from lit_diffsr.nets.adm_import import pretrained_hint


def pretrained(path: str, sampler: dict | None = None, predict: dict | None = None) -> DiffusionMethod:
    """The method saved at `path`; `sampler` (e.g. {steps: "ddim50"}) and `predict` (num_samples,
    labels, batch_size, seed) override what the checkpoint holds."""
    if not path or not Path(path).is_file():
        hint = pretrained_hint(path) if path else ""
        raise ConfigError(f"model.path={path!r}: no such checkpoint; " + (
            hint or "pass a .ckpt written by `lit_diffsr fit` or `lit_diffsr convert`"))
    method = load_method(path)
    # null = keep the checkpoint's value
    sampler = {key: value for key, value in as_dict(sampler).items() if value is not None}
    predict = {key: value for key, value in as_dict(predict).items() if value is not None}
    setup = getattr(method, "diffusion", None)
    settings = setup.sampler if setup is not None else getattr(method, "sampler", None)
    reject_unknown_keys(sampler, settings or {}, "model.sampler")
    settings.update({key: value for key, value in sampler.items() if key != "steps"})
    if "steps" in sampler:
        (setup or method).set_sampling_steps(sampler["steps"])
    if predict:
        options = getattr(method, "predict_options", None)
        if options is None or set(predict) - set(options):
            raise ConfigError(f"model.predict: {type(method).__name__} takes {sorted(options or {})}")
        options.update(predict)
    return method
