"""Hooks and temporary model states never outlive a call, even when the forward pass raises."""

from __future__ import annotations

import pytest
import torch

from explain import METHODS, make_method, methods_for

from helpers.explain_models import images, no_hooks_left, tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster


class Boom(RuntimeError):
    pass


def _explode(*args: object, **kwargs: object) -> None:
    raise Boom("the classifier failed")


@pytest.mark.parametrize("model_type", ["vit", "resnet"])
def test_no_hook_survives_an_exception(model_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny(model_type).train()  # training mode and trainable weights must come back as they were
    attention = model.config._attn_implementation
    methods = methods_for(model)
    assert len(methods) >= 9
    head = model.classifier
    for name in methods:
        method = make_method(name, model)
        monkeypatch.setattr(head, "forward", _explode)  # raises after the target layer has run
        with pytest.raises(Boom):
            method(images(2))
        monkeypatch.undo()
        assert no_hooks_left(model), name
        assert model.training, name
        assert all(parameter.requires_grad for parameter in model.parameters()), name
        assert model.config._attn_implementation == attention, name


def test_explaining_runs_in_eval_mode_and_restores_each_module_own_mode() -> None:
    model = tiny("resnet").train()
    kept_in_eval = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)][:2]
    for module in kept_in_eval:
        module.eval()  # a user's frozen batch norm: must not be switched to training afterwards
    seen_training = []
    handle = model.register_forward_pre_hook(lambda *_: seen_training.append(any(m.training for m in model.modules())))
    try:
        make_method("gradcam", model)(images(2))
    finally:
        handle.remove()
    assert seen_training == [False]
    assert all(not module.training for module in kept_in_eval)
    assert all(module.training for module in model.modules() if not any(module is kept for kept in kept_in_eval))


@pytest.mark.parametrize("name", list(METHODS))
def test_no_hook_survives_a_normal_call(name: str) -> None:
    model = tiny("vit")
    if name not in methods_for(model):
        pytest.skip(f"{name} does not fit a ViT")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    make_method(name, model)(images(2), targets="all")
    assert no_hooks_left(model)
    assert all(parameter.requires_grad for parameter in model.parameters())
    assert all(parameter.grad is None for parameter in model.parameters())  # no weight gradient was computed
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert model.config._attn_implementation == "sdpa"


def test_exception_inside_the_backward_pass_leaves_no_guided_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny("vit")
    method = make_method("guided_backprop", model)

    def failing_grad(*args: object, **kwargs: object) -> None:
        raise Boom("backward failed")

    monkeypatch.setattr(torch.autograd, "grad", failing_grad)
    with pytest.raises(Boom):
        method(images(2))
    monkeypatch.undo()
    assert no_hooks_left(model)
