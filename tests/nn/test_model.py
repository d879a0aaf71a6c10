"""The EOIR network: sizes, counts, variants, any input size, training outputs."""

from __future__ import annotations

import pytest
import torch

from eoir.nn import EOIR, EOIROutput, build_model
from eoir.nn._inference import OneDNNConv3d, _instance_norm_prelu
from eoir.nn.blocks import ConvNormAct
from eoir.nn.complexity import count_multiply_adds, count_parameters


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (EOIR(width=32), 909_232),
        (EOIR(width=8), 111_208),
        (EOIR(width=16), 294_272),
        (EOIR.oasis(width=32), 3_441_484),
        (EOIR.oasis(width=16), 914_172),
    ],
)
def test_parameter_counts_match_the_method(model, expected):
    assert count_parameters(model) == expected


def test_multiply_adds_match_table_iv_and_method_page():
    # Table IV (ACDC, 128x128x16, in-plane pyramid): 114.21 G at N_s=32, 11.02 G at N_s=8
    assert (
        round(count_multiply_adds(EOIR(width=32, factors=(2, 2, 1)), (128, 128, 16)) / 1e9, 2)
        == 114.21
    )
    assert (
        round(count_multiply_adds(EOIR(width=8, factors=(2, 2, 1)), (128, 128, 16)) / 1e9, 2)
        == 11.02
    )
    # abdomen, 96x80x128: 398.6 G at N_s=32
    assert round(count_multiply_adds(EOIR(width=32), (96, 80, 128)) / 1e9, 1) == 398.6


def test_no_grids_or_buffers_in_the_state_dict():
    model = EOIR(width=8)
    assert list(model.buffers()) == []
    assert all(name.endswith(("weight", "bias")) for name in model.state_dict())


def test_config_rebuilds_the_same_architecture():
    model = EOIR(ndim=2, width=6, levels=4, integration_steps=3, composition="add", factors=(2, 1))
    clone = EOIR(**model.config)
    assert clone.config == model.config
    clone.load_state_dict(model.state_dict())  # same keys and shapes


@pytest.mark.parametrize("shape", [(37, 50, 41), (61, 77)])
def test_forward_backward_on_odd_sizes(shape):
    ndim = len(shape)
    model = EOIR(ndim=ndim, width=4, levels=4)
    moving, fixed = torch.rand(1, 1, *shape), torch.rand(1, 1, *shape)
    out = model(moving, fixed, levels=True)
    assert isinstance(out, EOIROutput)
    assert out.disp.shape == (1, ndim, *shape)
    # per-level fields live on the padded grid (multiple of 8), finest first
    assert out.fields[0].shape[2:] == tuple(-(-n // 8) * 8 for n in shape)
    assert len(out.fields) == len(out.residuals) == 4
    loss = out.disp.square().mean() + sum(r.square().mean() for r in out.residuals)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        disp = model(moving, fixed)
    assert isinstance(disp, torch.Tensor) and disp.shape == (1, ndim, *shape)
    torch.testing.assert_close(disp, out.disp.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("architecture", ["eoir", "voxelmorph"])
def test_what_a_forward_pass_returns_depends_on_levels_not_on_the_mode(architecture):
    config = {"architecture": architecture, "ndim": 2, "width": 4, "levels": 2}
    model = build_model(config, strict=False)
    moving, fixed = torch.rand(1, 1, 16, 20), torch.rand(1, 1, 16, 20)
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            disp = model(moving, fixed)
            out = model(moving, fixed, levels=True)
        assert type(disp) is torch.Tensor and disp.shape == (1, 2, 16, 20)
        assert isinstance(out, EOIROutput)
        torch.testing.assert_close(out.disp, disp)


def test_batch_of_pairs_is_independent():
    model = EOIR(width=4, levels=3).eval()
    moving, fixed = torch.rand(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        both = model(moving, fixed)
        second = model(moving[1:], fixed[1:])
    torch.testing.assert_close(both[1:], second, rtol=1e-4, atol=1e-5)


def test_oasis_variant_estimates_from_half_resolution():
    model = EOIR.oasis(width=4)
    assert model.config["integration_steps"] == 0 and model.config["large_kernel"]
    out = model(torch.rand(1, 1, 32, 48, 64), torch.rand(1, 1, 32, 48, 64), levels=True)
    # residuals at 1/2 .. 1/16; composed fields upsampled back: full .. 1/8
    assert [tuple(r.shape[2:]) for r in out.residuals] == [
        (16, 24, 32),
        (8, 12, 16),
        (4, 6, 8),
        (2, 3, 4),
    ]
    assert [tuple(f.shape[2:]) for f in out.fields] == [
        (32, 48, 64),
        (16, 24, 32),
        (8, 12, 16),
        (4, 6, 8),
    ]
    assert out.disp.shape == (1, 3, 32, 48, 64)


def test_additive_and_composed_variants_differ():
    torch.manual_seed(1)
    composed = EOIR(width=4, levels=3).eval()
    additive = EOIR(width=4, levels=3, composition="add").eval()
    additive.load_state_dict(composed.state_dict())
    moving, fixed = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(composed(moving, fixed), additive(moving, fixed))


def test_anisotropic_pyramid_keeps_through_plane_axis_and_magnitude():
    model = EOIR(width=4, levels=4, factors=(2, 2, 1))
    out = model(torch.rand(1, 1, 32, 32, 5), torch.rand(1, 1, 32, 32, 5), levels=True)
    assert [tuple(f.shape[2:]) for f in out.fields] == [
        (32, 32, 5),
        (16, 16, 5),
        (8, 8, 5),
        (4, 4, 5),
    ]
    ones = torch.ones(1, 3, 4, 4, 5)
    up = model._upsample_field(ones)
    # in-plane components double with the grid; the through-plane one does not (unlike the
    # reference code's quirk)
    torch.testing.assert_close(up[0, :, 1, 1, 1], torch.tensor([2.0, 2.0, 1.0]))


def test_integrated_model_has_no_folding_at_init():
    from eoir.metrics import jacobian_stats

    model = EOIR(width=4, levels=3).eval()
    with torch.no_grad():
        disp = model(torch.rand(1, 1, 24, 24, 24), torch.rand(1, 1, 24, 24, 24))
    assert torch.isfinite(disp).all()
    assert jacobian_stats(disp)["folding_percent"] < 1.0


def test_rejects_bad_inputs():
    model = EOIR(width=4, levels=3)
    with pytest.raises(ValueError, match="one shape"):
        model(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 9))
    with pytest.raises(ValueError, match=r"\(B, 1, \*spatial\)"):
        model(torch.rand(1, 2, 8, 8, 8), torch.rand(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="ndim"):
        EOIR(ndim=4)
    with pytest.raises(ValueError, match="composition"):
        EOIR(composition="multiply")


def test_slab_estimation_equals_the_whole_volume():
    torch.manual_seed(0)
    model = EOIR(width=4, levels=3).eval()
    moving, fixed = torch.rand(1, 1, 37, 20, 18), torch.rand(1, 1, 37, 20, 18)
    with torch.inference_mode():
        model.slab_above = 0
        whole = model(moving, fixed)
        model.slab_above = 1  # every level over slabs of 32 planes (40 padded planes: 2 slabs)
        slabs = model(moving, fixed)
        estimator = model.estimators[0]
        f, m = torch.rand(1, 4, 23, 9, 7), torch.rand(1, 4, 23, 9, 7)
        direct = estimator(f, m)
        for slab in (1, 4, 5, 22):
            assert (estimator(f, m, slab) - direct).abs().max() < 1e-5
    assert (slabs - whole).abs().max() < 1e-5


def test_eval_pass_encodes_images_one_at_a_time_with_the_same_result():
    torch.manual_seed(1)
    model = EOIR(width=4, levels=3)
    moving, fixed = torch.rand(1, 1, 24, 20, 16), torch.rand(1, 1, 24, 20, 16)
    with torch.no_grad():
        batched = model.train()(moving, fixed)
        single = model.eval()(moving, fixed)
    assert (batched - single).abs().max() < 1e-5


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_blocked_cpu_instance_norm_equals_the_module(monkeypatch, ndim, channels_last):
    import eoir.nn._inference

    monkeypatch.setattr(eoir.nn._inference, "_NORM_BLOCK", 50)  # many blocks on a small map
    torch.manual_seed(3)
    block = ConvNormAct(ndim, 2, 5).eval()
    x = 3.0 + torch.rand(2, 2, *(11, 9, 7)[:ndim])  # an offset: centring matters
    if channels_last and ndim == 3:
        x = x.contiguous(memory_format=torch.channels_last_3d)
        block = block.to(memory_format=torch.channels_last_3d)
    elif channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        block = block.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        fast = block(x)
    reference = torch.nn.Sequential.forward(block, x)
    assert (fast - reference.detach()).abs().max() < 1e-5


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_training_norm_equals_the_module_with_gradients(monkeypatch, ndim, channels_last):
    import eoir.nn._training
    from eoir.nn._training import instance_norm_prelu

    monkeypatch.setattr(eoir.nn._training, "_BLOCK", 40)  # many blocks on a small map
    torch.manual_seed(4)
    layout = torch.channels_last_3d if ndim == 3 else torch.channels_last
    x = 3.0 + 2.0 * torch.randn(2, 5, *(11, 9, 7)[:ndim], dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=layout)
    slope = torch.tensor([0.3], dtype=torch.float64)
    upstream = torch.randn(x.shape, dtype=torch.float64)
    outputs, grads = [], []
    for fused in (True, False):
        xi, si = x.clone().requires_grad_(), slope.clone().requires_grad_()
        if fused:
            y = instance_norm_prelu(xi, si, 1e-5)
        else:
            y = torch.nn.functional.prelu(torch.nn.functional.instance_norm(xi, eps=1e-5), si)
        (y * upstream).sum().backward()
        outputs.append(y.detach())
        grads.append((xi.grad, si.grad))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-10, rtol=1e-10)
    assert outputs[0].is_contiguous(memory_format=layout) == channels_last
    strided = x.detach()[:, :, ::2]  # neither contiguous nor channels-last: taken as a copy
    reference = torch.nn.functional.prelu(torch.nn.functional.instance_norm(strided), slope)
    torch.testing.assert_close(instance_norm_prelu(strided, slope), reference)
    small = x[:, :2, :4, :3].clone().requires_grad_()  # and numerically, through both inputs
    assert torch.autograd.gradcheck(
        lambda a, b: instance_norm_prelu(a, b, 1e-5), (small, slope.clone().requires_grad_())
    )


def test_training_blocks_use_the_fused_norm_and_keep_channels_last():
    torch.manual_seed(7)
    block = ConvNormAct(3, 2, 4).train().to(memory_format=torch.channels_last_3d)
    x = torch.rand(2, 2, 10, 9, 8).contiguous(memory_format=torch.channels_last_3d)
    y = block(x)
    assert y.grad_fn is not None and "InstanceNormPReLU" in type(y.grad_fn).__name__
    assert y.is_contiguous(memory_format=torch.channels_last_3d)  # no copy back to contiguous
    reference = torch.nn.Sequential.forward(block, x)
    assert (y - reference).abs().max() < 1e-5
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast keeps the module path
        low = block(x)
    assert "InstanceNormPReLU" not in type(low.grad_fn).__name__


def test_training_in_channels_last_gives_the_same_loss_and_gradients():
    from eoir.losses import multilevel_loss

    torch.manual_seed(8)
    moving, fixed = torch.rand(1, 1, 16, 12, 16), torch.rand(1, 1, 16, 12, 16)
    results = []
    for last in (False, True):
        torch.manual_seed(9)
        model = EOIR(width=4, levels=3).train()
        model.channels_last = last
        model.set_layout("cpu")
        output = model(moving, fixed, levels=True)
        loss, _ = multilevel_loss(output.fields, output.residuals, moving, fixed)
        loss.backward()
        weight = model.encoder[1][0].weight
        assert weight.is_contiguous(memory_format=torch.channels_last_3d) == last
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
        with torch.no_grad():  # an eval pass leaves the training layout as it was
            model.eval()(moving, fixed)
        weight = model.encoder[1][0].weight
        assert weight.is_contiguous(memory_format=torch.channels_last_3d) == last
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-6, rtol=1e-5)
    for plain, last in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(last, plain, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inference_norms_equal_the_module_in_any_precision(dtype):
    # the CPU (blocked) and GPU (whole-map) in-place norms, run here on CPU tensors

    torch.manual_seed(6)
    block = ConvNormAct(3, 2, 6).eval()
    with torch.no_grad():
        block[2].weight.fill_(0.1)
    x = 2.0 + torch.rand(2, 2, 10, 9, 8)
    tolerance = 1e-5 if dtype == torch.float32 else 0.05  # bf16 keeps 8 bits: 0.4 % per value
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        reference = torch.nn.Sequential.forward(block, x).float()
        with torch.inference_mode():
            blocked = block(x).float()
            conv = block[0](x)
            whole = _instance_norm_prelu(conv, block[1].eps, block[2].weight).float()
    for fast in (blocked, whole):
        assert (fast - reference).abs().max() < tolerance
    assert conv.dtype == dtype


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    from eoir.losses import multilevel_loss

    torch.manual_seed(5)
    model = EOIR(width=4, levels=3).train()
    moving, fixed = torch.rand(2, 1, 16, 12, 16), torch.rand(2, 1, 16, 12, 16)
    grads = []
    for recompute in (False, True):
        model.activation_checkpointing = recompute
        model.zero_grad()
        output = model(moving, fixed, levels=True)
        loss, _ = multilevel_loss(output.fields, output.residuals, moving, fixed)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, recomputed in zip(*grads, strict=True):
        torch.testing.assert_close(recomputed, plain, atol=1e-6, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in grads[1])


def test_in_place_inference_blocks_equal_the_autograd_path():
    torch.manual_seed(2)
    model = EOIR(width=4, levels=3).eval()
    with torch.no_grad():
        model.encoder[0][2].weight.fill_(0.1)  # a slope other than the initial 0.25
    moving, fixed = torch.rand(1, 1, 20, 18, 16), torch.rand(1, 1, 20, 18, 16)
    with torch.inference_mode():
        fast = model(moving, fixed)
        block = model.encoder[0]
        x = torch.rand(2, 1, 9, 8, 7)
        assert (block(x) - torch.nn.Sequential.forward(block, x)).abs().max() < 1e-5
    reference = model(moving, fixed)  # autograd on: the plain modules
    assert (fast - reference.detach()).abs().max() < 1e-5


@pytest.mark.parametrize("shape", [(9, 7, 6), (30, 22, 20)])  # PyTorch's reference-kernel sizes
@pytest.mark.parametrize("channels_last", [False, True])
def test_onednn_inference_convolution_equals_the_module_path(shape, channels_last):
    torch.manual_seed(0)
    conv = OneDNNConv3d(12, 9, kernel_size=3, padding=1)
    x = torch.randn(1, 12, *shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    assert list(conv.state_dict()) == list(torch.nn.Conv3d(12, 9, 3).state_dict())
    reference = torch.nn.functional.conv3d(x, conv.weight, conv.bias, padding=1)
    with torch.inference_mode():
        fast = conv(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast takes the module path
            low = conv(x)
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), reference, rtol=0.05, atol=0.1)
    conv(x.requires_grad_()).sum().backward()  # training: the module path, with gradients
    assert x.grad is not None
