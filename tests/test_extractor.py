"""Extractors: feature sizes per backbone, last stride 1, BNNeck wiring, MGN's 8 × 256 feature, weights and
checkpoints."""

import pytest
import torch

from havana.errors import HavanaError
from havana.models.extractor import build_extractor, imagenet_resnet, load_extractor, save_extractor
from havana.models.extractor_config import ExtractorConfig

torch.set_num_threads(2)
SMALL = (2, 3, 64, 32)


@pytest.mark.parametrize(
    "arch,dim",
    [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("resnet101", 2048), ("resnet152", 2048), ("mgn", 2048)],
)
def test_test_feature_and_training_outputs_have_the_backbone_sizes(arch, dim):
    torch.manual_seed(0)
    model = build_extractor(ExtractorConfig(arch=arch, pretrained=False), num_classes=7)
    assert model.feature_dim == dim
    size = (2, 3, 96, 32) if arch == "mgn" else SMALL  # MGN's 3 stripes need 5 rows or more
    with torch.no_grad():
        assert model.eval()(torch.randn(*size)).shape == (2, dim)
        out = model.train()(torch.randn(*size))
    heads = 8 if arch == "mgn" else 1
    assert [tuple(x.shape) for x in out.logits] == [(2, 7)] * heads
    assert [x.shape[1] for x in out.triplet_features] == ([256, 256, 256, 512, 768] if arch == "mgn" else [dim])


@pytest.mark.parametrize("last_stride,size", [(1, (16, 8)), (2, (8, 4))])
def test_last_stride_sets_the_resnet50_map_at_256x128(last_stride, size):
    model = build_extractor(ExtractorConfig(arch="resnet50", pretrained=False, last_stride=last_stride), 3).eval()
    with torch.no_grad():
        feature_map = model.trunk(torch.zeros(1, 3, 256, 128))
    assert feature_map.shape == (1, 2048, *size)


def test_bnneck_gives_triplet_feature_before_bn_and_test_feature_after():
    torch.manual_seed(1)
    model = build_extractor(ExtractorConfig(arch="resnet18", pretrained=False), 4)
    assert model.classifier.bias is None and not model.bnneck.bias.requires_grad
    images = torch.randn(*SMALL)
    with torch.no_grad():
        out = model.train()(images)
        pooled = model.trunk(images).mean(dim=(2, 3))  # GAP by hand
        torch.testing.assert_close(out.triplet_features[0], pooled)
        model.eval()
        pooled = model.trunk(images).mean(dim=(2, 3))
        bn = model.bnneck
        expected = (pooled - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        torch.testing.assert_close(model(images), expected)


def test_mgn_is_fast_reids_eight_bn_features_from_three_stride_1_branches():
    # fast-reid's MGN meta-architecture (fastreid/modeling/meta_arch/mgn.py, Base-MGN on Base-SBS): every conv5 at
    # stride 1, stripes by torch.chunk, EmbeddingHead = GeM pooling (learnt p = 3), 1×1 conv 2048 → 256, BN; test
    # feature b1, b2, b3, b21, b22, b31, b32, b33 concatenated (2048-d)
    torch.manual_seed(2)
    model = build_extractor(ExtractorConfig(arch="mgn", pretrained=False), 5).eval()
    shapes = [None] * 3
    for i, branch in enumerate(model.branches):
        branch.register_forward_hook(lambda _m, _i, out, i=i: shapes.__setitem__(i, tuple(out.shape[2:])))
    images = torch.randn(2, 3, 96, 32)  # a 6×2 map: chunk(3) gives rows 2+2+2, chunk(2) 3+3
    with torch.no_grad():
        feature = model(images)
        third = model.branches[2](model.trunk(images))
        head = model.heads[7]
        region = third[:, :, 4:6]  # bottom stripe of the 3-part branch
        pooled = region.clamp(min=1e-6).pow(3).mean(dim=(2, 3), keepdim=True).pow(1 / 3)  # GeM at p = 3
        bottom = head.bnneck(head.reduce(pooled).flatten(1))
    assert shapes == [(6, 2), (6, 2), (6, 2)]
    assert feature.shape == (2, 2048)
    torch.testing.assert_close(feature[:, 7 * 256 :], bottom, rtol=1e-4, atol=1e-4)  # mean vs avg-pool rounding
    with pytest.raises(HavanaError, match="at least 80 pixels high"):
        model(torch.randn(2, 3, 64, 32))  # a 4-row map: torch.chunk gives 2 stripes, not 3
    assert head.pool.p.detach().item() == 3.0 and head.reduce.bias is None and not head.bnneck.bias.requires_grad
    assert [torch.chunk(torch.zeros(16), 3)[i].numel() for i in range(3)] == [6, 6, 4]  # fast-reid's split of 16 rows
    out = model.train()(images)
    assert [x.shape[1] for x in out.triplet_features] == [256, 256, 256, 512, 768]
    assert (out.ce_weight, out.triplet_weight) == (0.125, 0.2) and len(out.logits) == 8


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(3)
    config = ExtractorConfig(arch="resnet18", pretrained=False, image_size=(64, 32))
    model = build_extractor(config, 6).eval()
    save_extractor(tmp_path / "model.pt", model, config, 6)
    loaded, loaded_config = load_extractor(tmp_path / "model.pt")
    assert loaded_config == config and not loaded.training
    images = torch.randn(*SMALL)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    with pytest.raises(HavanaError, match="does not exist"):
        load_extractor(tmp_path / "missing.pt")


def test_local_weights_file_is_loaded_and_a_missing_one_is_named(tmp_path):
    reference = imagenet_resnet("resnet18", pretrained=False, weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    loaded = imagenet_resnet("resnet18", pretrained=True, weights=tmp_path / "r18.pth")
    torch.testing.assert_close(loaded.conv1.weight, reference.conv1.weight, rtol=0, atol=0)
    with pytest.raises(HavanaError, match="nope.pth"):
        imagenet_resnet("resnet18", pretrained=True, weights=tmp_path / "nope.pth")


def test_offline_download_failure_names_the_file_to_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # discard port: the download fails at once, offline or not
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(HavanaError, match=r"hub/checkpoints/resnet18-f37072fd\.pth"):
        imagenet_resnet("resnet18", pretrained=True, weights=None)


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(HavanaError, match="unknown extractor arch"):
        ExtractorConfig(arch="vgg16")


@pytest.mark.parametrize("arch", ["resnet18", "mgn"])
def test_stem_switches_keep_the_state_dict_and_change_the_forward(arch):
    # BoT has no ReLU after bn1; fast-reid pools 3×3/2 without padding, ceil_mode. Neither holds state, so one state
    # dict fits every stem; the forward must differ (oracle: torchvision's stem with ReLU and padding 1).
    torch.manual_seed(2)
    reference = build_extractor(ExtractorConfig(arch=arch, pretrained=False), 5).eval()
    images = torch.randn(2, 3, 96, 32)  # MGN's 3 stripes need 5 rows or more
    for switches in ({"stem_relu": False}, {"stem_pool": "ceil"}):
        model = build_extractor(ExtractorConfig(arch=arch, pretrained=False, **switches), 5).eval()
        assert [(k, v.shape) for k, v in model.state_dict().items()] == [
            (k, v.shape) for k, v in reference.state_dict().items()
        ]
        model.load_state_dict(reference.state_dict())
        with torch.no_grad():
            assert not torch.allclose(model(images), reference(images), atol=1e-3), switches


def test_bot_stem_is_conv_bn_then_pool_without_relu():
    model = build_extractor(ExtractorConfig(arch="resnet18", pretrained=False, stem_relu=False), 3).eval()
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        expected = torch.nn.functional.max_pool2d(model.trunk[1](model.trunk[0](x)), 3, 2, 1)
        torch.testing.assert_close(model.trunk[:4](x), expected, rtol=0, atol=0)
    with pytest.raises(HavanaError, match="unknown stem_pool 'round'"):
        ExtractorConfig(stem_pool="round")


def test_the_paper_extractors_train_and_extract_in_fp32_by_default():
    # BoT trains and tests in fp32; bf16 autocast (amp) is an opt-in departure
    config = ExtractorConfig()
    assert config.train.amp is False and config.extraction.amp is False
