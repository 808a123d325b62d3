"""Loading: a local folder through `from_pretrained`, truncated loads, and `ModelUnavailable` when offline."""

import socket

import numpy as np
import pytest

from annotator.errors import ModelUnavailable
from tests.tiny_llava import SPEC_GQA, random_image, tiny_llava, tiny_processor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPRESSION = "the dog on the left"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny LLaVA and its processor saved with `save_pretrained`, and the engine of the in-memory original."""
    from annotator.lvlm.engine import LvlmEngine

    folder = tmp_path_factory.mktemp("tiny-llava")
    model, processor = tiny_llava(SPEC_GQA), tiny_processor(SPEC_GQA)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, LvlmEngine(model, processor)


@pytest.fixture
def no_network(monkeypatch):
    """Offline mode, and a record of any socket connection attempted."""
    import huggingface_hub.constants

    attempts = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: attempts.append(address))
    return attempts


def test_a_local_folder_loads_into_the_same_maps(saved_model):
    from annotator.lvlm.engine import LvlmEngine

    folder, original = saved_model
    engine = LvlmEngine.load(folder)
    image = random_image(30, 50)
    assert engine.model_id == str(folder)
    np.testing.assert_allclose(
        engine.image_attention(image, EXPRESSION), original.image_attention(image, EXPRESSION), rtol=0, atol=1e-6
    )


def test_a_truncated_load_builds_no_layer_above_the_truncation_nor_the_lm_head(saved_model):
    from annotator.lvlm.engine import LvlmEngine

    folder, _ = saved_model
    engine = LvlmEngine.load(folder, truncate_after_layer=1)
    names = [name for name, _ in engine.model.named_parameters()]
    assert engine.num_layers == 2
    assert not hasattr(engine.model, "lm_head")
    assert not [n for n in names if "language_model.layers.2." in n or "language_model.layers.3." in n]
    assert "model.language_model.layers.1.mlp.up_proj.weight" in names


def test_a_truncated_load_gives_the_same_maps_as_the_full_model(saved_model):
    from annotator.lvlm.engine import LvlmEngine

    folder, original = saved_model
    engine = LvlmEngine.load(folder, truncate_after_layer=1)
    image = random_image(30, 50)
    heads = [(1, 3), (0, 0)]
    np.testing.assert_allclose(
        engine.image_attention(image, EXPRESSION, heads=heads, image_id="a"),
        original.image_attention(image, EXPRESSION, heads=heads),
        rtol=0,
        atol=1e-5,
    )


def test_a_head_above_the_truncation_is_refused(saved_model):
    from annotator.lvlm.engine import LvlmEngine

    engine = LvlmEngine.load(saved_model[0], truncate_after_layer=1)
    with pytest.raises(ValueError, match="2 text layers are loaded"):
        engine.image_attention(random_image(8, 8), EXPRESSION, heads=[(2, 0)])


def test_truncating_beyond_the_model_is_refused(saved_model):
    from annotator.lvlm.engine import LvlmEngine

    with pytest.raises(ValueError, match="has 4 text layers"):
        LvlmEngine.load(saved_model[0], truncate_after_layer=4)


def test_an_absent_model_id_offline_raises_model_unavailable_naming_it(no_network):
    from annotator.lvlm.engine import LvlmEngine

    with pytest.raises(ModelUnavailable) as error:
        LvlmEngine.load("nobody-here/absent-llava-1.5")
    message = str(error.value)
    assert "'nobody-here/absent-llava-1.5'" in message
    assert "hf download nobody-here/absent-llava-1.5" in message
    assert "huggingface" in message
    assert no_network == []


def test_a_missing_local_folder_raises_model_unavailable(no_network, tmp_path):
    from annotator.lvlm.engine import LvlmEngine

    with pytest.raises(ModelUnavailable, match="no-such-folder"):
        LvlmEngine.load(tmp_path / "no-such-folder")


def test_a_folder_of_another_model_type_raises_model_unavailable(tmp_path):
    from transformers import LlamaConfig

    from annotator.lvlm.engine import LvlmEngine

    config = LlamaConfig(num_hidden_layers=1, hidden_size=8, intermediate_size=8, num_attention_heads=2)
    config.save_pretrained(tmp_path)
    with pytest.raises(ModelUnavailable, match="'llama' checkpoint"):
        LvlmEngine.load(tmp_path)


def test_four_bit_loading_on_the_cpu_is_refused_with_a_reason(saved_model):
    from annotator.lvlm.engine import LvlmEngine

    with pytest.raises(ModelUnavailable, match="needs a CUDA GPU"):
        LvlmEngine.load(saved_model[0], device="cpu", load_in_4bit=True)


def test_a_model_that_keeps_the_cls_feature_is_refused():
    from annotator.lvlm.engine import LvlmEngine

    model = tiny_llava(SPEC_GQA)
    model.config.vision_feature_select_strategy = "full"
    with pytest.raises(ValueError, match="keeps the CLS feature"):
        LvlmEngine(model, tiny_processor(SPEC_GQA))


def test_a_truncated_qwen_checkpoint_in_the_hub_layout_gives_the_whole_models_maps():
    from annotator.lvlm.engine import LvlmEngine
    from annotator.synthetic.planted_qwen import PLANTED_QWEN_DIR, PLANTED_QWEN_HEADS
    from annotator.synthetic.scenes import generate_scenes

    whole = LvlmEngine.load(PLANTED_QWEN_DIR)
    truncated = LvlmEngine.load(PLANTED_QWEN_DIR, truncate_after_layer=6)
    assert truncated.num_layers == 7
    scene = next(iter(generate_scenes(3, 1)))
    heads = list(PLANTED_QWEN_HEADS.localization)
    ours = truncated.image_attention(scene.image, scene.expression, heads=heads)
    np.testing.assert_array_equal(ours, whole.image_attention(scene.image, scene.expression, heads=heads))
    assert (ours.reshape(len(heads), -1).sum(axis=1) > 0.2).all()  # the localizers look at the image


def test_a_truncated_qwen_model_skips_the_layers_above_and_the_lm_head_when_loading(tmp_path):
    from annotator.lvlm.checkpoint import grounding_model_class
    from tests.tiny_qwen import QWEN2_VL, tiny_config

    model_class, config = grounding_model_class(tiny_config(QWEN2_VL), truncate_after_layer=1)
    model = model_class(config)
    assert len(model.model.language_model.layers) == 2 and not hasattr(model, "lm_head")


@pytest.mark.parametrize(
    "config_class, why",
    [("MllamaConfig", "cross-attention"), ("Florence2Config", "encoder-decoder"), ("Blip2Config", "Q-Former")],
)
def test_a_model_whose_decoder_does_not_read_image_tokens_in_order_is_refused_saying_why(tmp_path, config_class, why):
    import transformers

    from annotator.lvlm.engine import LvlmEngine

    getattr(transformers, config_class)().save_pretrained(tmp_path)
    with pytest.raises(ModelUnavailable, match=f"cannot ground with localization heads: .*{why}"):
        LvlmEngine.load(tmp_path)
