"""ForeachEMA: the same averages, checkpoints and resume behaviour as Lightning's EMAWeightAveraging."""

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch.utils.data import DataLoader, TensorDataset

from lit_diffsr.callbacks.ema import ForeachEMA, _ForeachEMAModel, warmed_up_decay

torch.set_num_threads(1)


class TinyModule(L.LightningModule):
    """A linear layer and a BatchNorm (float running stats plus an integer counter buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))

    def training_step(self, batch, batch_idx):
        return (self.net(batch[0]) - 1.0).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    data = torch.randn(24, 4, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(data), batch_size=8)


def fit(callback, max_steps: int, root: Path, ckpt_path: str | None = None) -> tuple[L.Trainer, TinyModule]:
    torch.manual_seed(0)
    module = TinyModule()
    trainer = L.Trainer(max_steps=max_steps, callbacks=[callback], default_root_dir=root, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu")
    trainer.fit(module, loader(), ckpt_path=ckpt_path)
    return trainer, module


def average_state(callback) -> dict[str, torch.Tensor]:
    return callback._average_model.state_dict()


def test_same_average_and_checkpoint_as_lightning(tmp_path: Path) -> None:
    reference_trainer, _ = fit(EMAWeightAveraging(decay=0.9), 5, tmp_path / "reference")
    foreach_trainer, _ = fit(ForeachEMA(decay=0.9, warmup=False), 5, tmp_path / "foreach")
    reference = average_state(reference_trainer.callbacks[0])
    foreach = average_state(foreach_trainer.callbacks[0])
    assert reference.keys() == foreach.keys()
    for name in reference:
        torch.testing.assert_close(foreach[name], reference[name], rtol=1e-6, atol=1e-7, msg=name)
    assert int(foreach["n_averaged"]) == 5
    # The average lags the trained weights (decay 0.9 over 5 steps), so the comparison has teeth.
    _, plain = fit(L.Callback(), 5, tmp_path / "plain")
    assert (foreach["module.net.1.bias"] - plain.net[1].bias).abs().max() > 0.1

    paths = {}
    for name, trainer in (("reference", reference_trainer), ("foreach", foreach_trainer)):
        paths[name] = tmp_path / f"{name}.ckpt"
        trainer.save_checkpoint(paths[name])
    saved = {name: torch.load(path, weights_only=True) for name, path in paths.items()}
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert saved["foreach"][key].keys() == saved["reference"][key].keys(), key


def test_resume_from_a_checkpoint_matches_lightning(tmp_path: Path) -> None:
    # Each callback resumes from its own checkpoint; the restored average (n_averaged > 0, so no fresh
    # copy) must then move exactly as Lightning's does.
    states = []
    for make in (lambda: EMAWeightAveraging(decay=0.8), lambda: ForeachEMA(decay=0.8, warmup=False)):
        root = tmp_path / type(make()).__name__
        first, _ = fit(make(), 3, root)
        first.save_checkpoint(root / "half.ckpt")
        resumed, _ = fit(make(), 6, root, ckpt_path=str(root / "half.ckpt"))
        states.append(average_state(resumed.callbacks[0]))
    reference, foreach = states
    assert int(foreach["n_averaged"]) == 6
    for name in reference:
        torch.testing.assert_close(foreach[name], reference[name], rtol=1e-6, atol=1e-7, msg=name)


def test_warmup_decay_follows_the_update_count_and_resumes_exactly() -> None:
    net = torch.nn.Linear(2, 1)

    def update(average: _ForeachEMAModel, updates: range) -> None:
        for index in updates:
            with torch.no_grad():
                net.weight.fill_(float(index**2))
            average.update_parameters(net)

    average, expected = _ForeachEMAModel(net, "cpu", use_buffers=True, decay=0.99), None
    for index in range(6):
        update(average, range(index, index + 1))
        decay = min(0.99, (1 + index) / (10 + index))  # update 0 copies
        expected = net.weight.clone() if index == 0 else decay * expected + (1 - decay) * net.weight
        torch.testing.assert_close(average.module.weight, expected, rtol=1e-6, atol=1e-6)
    assert warmed_up_decay(0.9999, 10**6) == 0.9999

    # A restored average continues the schedule from its update count (a restart would copy the weights).
    first = _ForeachEMAModel(net, "cpu", use_buffers=True, decay=0.99)
    update(first, range(3))
    resumed = _ForeachEMAModel(net, "cpu", use_buffers=True, decay=0.99)
    resumed.load_state_dict(first.state_dict())
    update(resumed, range(3, 6))
    torch.testing.assert_close(resumed.module.weight, average.module.weight, rtol=1e-6, atol=1e-6)


def test_bad_decay_is_named() -> None:
    with pytest.raises(ValueError, match="decay=1.5"):
        ForeachEMA(decay=1.5)
