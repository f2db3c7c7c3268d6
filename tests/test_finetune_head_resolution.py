"""Paper section 3.2: a zero-initialised fine-tuning head and higher-resolution fine-tuning."""
import copy

import torch
from timm.layers import resample_abs_pos_embed

import vitlens
from conftest import perturb_


def test_reset_head_removes_pretraining_head_and_is_exactly_zero():
    model = perturb_(vitlens.create_model("vit_ti16", representation_size=192, num_classes=1000))
    assert isinstance(model.pre_logits, torch.nn.Sequential) and isinstance(model.pre_logits.act, torch.nn.Tanh)
    model.reset_head(10)
    assert not any(k.startswith("pre_logits") for k in model.state_dict())
    assert model.head.weight.shape == (10, 192)
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    with torch.no_grad():
        assert torch.count_nonzero(model.eval()(torch.randn(2, 3, 224, 224))) == 0


def test_pretraining_head_is_a_tanh_hidden_layer():
    model = perturb_(vitlens.create_model("vit_ti16", depth=2, representation_size=64, num_classes=5)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        y = model.forward_features(x)[:, 0]
        expected = model.head(torch.tanh(model.pre_logits.fc(y)))
        torch.testing.assert_close(model(x), expected)


def test_224_to_384_runs_and_keeps_the_class_slot():
    model = perturb_(vitlens.create_model("vit_ti16", depth=2)).eval()
    old = model.pos_embed.detach().clone()
    model.set_img_size(384)
    assert model.pos_embed.shape == (1, 1 + 24 * 24, 192)
    assert torch.equal(model.pos_embed[0, 0], old[0, 0])
    torch.testing.assert_close(model.pos_embed, resample_abs_pos_embed(old, [24, 24]))
    assert model.data_config["input_size"] == (3, 384, 384)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 384, 384)).shape == (1, 1000)


def test_dynamic_img_size_equals_moving_the_model():
    model = perturb_(vitlens.create_model("vit_ti16", depth=2, dynamic_img_size=True)).eval()
    moved = copy.deepcopy(model)
    moved.set_img_size((288, 160))
    x = torch.randn(2, 3, 288, 160)
    with torch.no_grad():
        torch.testing.assert_close(model(x), moved(x))
