"""Files are untrusted: a checkpoint (or any file a user points the project at) that would run code when
loaded is refused, through every entry point, before the code runs. Each payload here would create a marker
file; every test asserts the refusal names the input and that the marker was never created."""

import os
import pathlib
import pickle
import sys

import numpy as np
import pytest
import torch

from lit_diffsr.errors import ConfigError, UntrustedFileError
from lit_diffsr.methods.base import class_path, load_method
from lit_diffsr.methods.classcond import ClassConditionalDiffusion
from tests.tiny_nets import TINY_UNET

METHOD = class_path(ClassConditionalDiffusion)


class Payload:
    """Pickled, it makes the unpickler call Path.touch(marker): code run by loading a file."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture
def marker(tmp_path) -> pathlib.Path:
    path = tmp_path / "payload_ran"
    yield path
    assert not path.exists(), "a payload ran"


def plain_checkpoint(path: pathlib.Path, net: dict, method: str = METHOD) -> pathlib.Path:
    """A checkpoint of plain dicts and strings only (it passes torch.load(weights_only=True))."""
    torch.save({"lit_diffsr_method": method, "hyper_parameters": {"net": net}, "state_dict": {}}, path)
    return path


@pytest.fixture
def target_payload(tmp_path, marker) -> pathlib.Path:
    """The attack of the issue: `net._target_: torch.load` of a pickle, with weights_only off."""
    pickled = tmp_path / "other.pkl"
    torch.save(Payload(marker), pickled)
    net = {"_target_": "torch.load", "f": str(pickled), "weights_only": False}
    return plain_checkpoint(tmp_path / "payload.ckpt", net)


@pytest.fixture
def pickled_payload(tmp_path, marker) -> pathlib.Path:
    """A checkpoint that runs code by being unpickled at all."""
    path = tmp_path / "pickled.ckpt"
    torch.save({"lit_diffsr_method": METHOD, "state_dict": {}, "extra": Payload(marker)}, path)
    return path


def test_load_method_refuses_a_target_outside_the_allow_list(target_payload):
    with pytest.raises(UntrustedFileError, match=r"checkpoint: refused .*payload\.ckpt.*'torch\.load'"):
        load_method(target_payload)


@pytest.mark.parametrize("target", ["builtins.open", "os.system", "lit_diffsr.nets.unet.torch.load",
                                    "lit_diffsr.methods.base.instantiate"])
def test_names_that_only_lead_to_other_code_are_refused(tmp_path, marker, target):
    path = plain_checkpoint(tmp_path / "x.ckpt", {"_target_": target, "file": str(marker), "mode": "w"})
    with pytest.raises(UntrustedFileError, match="not a lit_diffsr network or method"):
        load_method(path)


def test_nested_targets_are_checked_too(tmp_path, marker):
    net = {**TINY_UNET, "extra": [{"inner": {"_target_": "builtins.open", "file": str(marker), "mode": "w"}}]}
    with pytest.raises(UntrustedFileError, match=r"hyper_parameters\.net\.extra\[0\]\.inner\._target_"):
        load_method(plain_checkpoint(tmp_path / "x.ckpt", net))


def test_the_method_module_is_not_imported_before_it_is_checked(tmp_path, marker, monkeypatch):
    module = tmp_path / "evil_module_for_test.py"
    module.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass Method: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = plain_checkpoint(tmp_path / "x.ckpt", TINY_UNET, method="evil_module_for_test.Method")
    with pytest.raises(UntrustedFileError, match="lit_diffsr_method names 'evil_module_for_test.Method'"):
        load_method(path)
    assert "evil_module_for_test" not in sys.modules


def test_a_pickled_object_is_refused_in_one_line(pickled_payload):
    with pytest.raises(UntrustedFileError, match=r"refused .*pickled\.ckpt: it holds Python obj") as error:
        load_method(pickled_payload, what="ckpt_path")
    assert str(error.value).startswith("ckpt_path: ")


def test_ddrm_prior_entry_point(target_payload):
    from lit_diffsr.methods.ddrm import load_prior

    with pytest.raises(UntrustedFileError, match="model.prior_ckpt: refused"):
        load_prior(str(target_payload))


def test_latent_autoencoder_entry_point(target_payload):
    from lit_diffsr.methods.autoencoder import frozen_autoencoder

    with pytest.raises(UntrustedFileError, match="model.autoencoder_ckpt: refused"):
        frozen_autoencoder(target_payload)


def test_cascade_stage_entry_point(target_payload):
    from lit_diffsr.pipelines.cascade import build_stages

    with pytest.raises(UntrustedFileError, match=r"pipeline\.stages\.base\.checkpoint: refused"):
        build_stages({"base": {"checkpoint": str(target_payload)}})


def test_i2sb_init_from_entry_point(pickled_payload):
    from lit_diffsr.nets import UNet
    from lit_diffsr.nets.loading import load_net_weights

    with pytest.raises(UntrustedFileError, match="model.init_from: refused"):
        load_net_weights(UNet(**{k: v for k, v in TINY_UNET.items() if k != "_target_"}), pickled_payload)


def test_ckpt_path_entry_point(pickled_payload, target_payload):
    from lit_diffsr.train import check_checkpoint_method

    method = ClassConditionalDiffusion(TINY_UNET)
    with pytest.raises(UntrustedFileError, match="ckpt_path: refused"):
        check_checkpoint_method(str(pickled_payload), method)
    # ckpt_path builds the model from the config, never from the file: the payload's target is not used.
    assert check_checkpoint_method(str(target_payload), method)["net"]["_target_"] == "torch.load"


def test_a_trusted_class_of_the_users_own_loads(tmp_path, monkeypatch):
    """The trust switch: a user's own network class, named in LIT_DIFFSR_TRUSTED_TARGETS, is allowed."""
    module = tmp_path / "my_nets_for_test.py"
    module.write_text("from lit_diffsr.nets import UNet\nclass MyUNet(UNet):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    trainer_free = ClassConditionalDiffusion({**TINY_UNET, "_target_": "my_nets_for_test.MyUNet"})
    path = tmp_path / "mine.ckpt"
    checkpoint = {"lit_diffsr_method": METHOD, "hyper_parameters": dict(trainer_free.hparams),
                  "state_dict": trainer_free.state_dict(), "pytorch-lightning_version": "2.6.0"}
    torch.save(checkpoint, path)
    with pytest.raises(UntrustedFileError, match="LIT_DIFFSR_TRUSTED_TARGETS=my_nets_for_test.MyUNet"):
        load_method(path)
    monkeypatch.setenv("LIT_DIFFSR_TRUSTED_TARGETS", "my_nets_for_test.MyUNet")
    assert type(load_method(path).net).__name__ == "MyUNet"


def test_cifar_batches_load_arrays_only(tmp_path, marker):
    from lit_diffsr.safe_load import load_pickled_arrays

    good = tmp_path / "data_batch_1"
    with open(good, "wb") as file:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}, file, protocol=2)
    assert load_pickled_arrays(good, what="--src")[b"labels"] == [1, 2]
    evil = tmp_path / "data_batch_2"
    with open(evil, "wb") as file:
        pickle.dump({b"data": Payload(marker)}, file)
    with pytest.raises(UntrustedFileError, match=r"--src: refused .*data_batch_2: it names pathlib"):
        load_pickled_arrays(evil, what="--src")


def test_a_file_that_is_not_a_checkpoint_is_one_clear_error(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(64))
    with pytest.raises(ConfigError, match=r"junk\.ckpt is not a readable PyTorch file"):
        load_method(junk)
