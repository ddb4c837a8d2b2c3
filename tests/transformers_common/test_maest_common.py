"""transformers' own common tests (ModelTesterMixin, ConfigTester, SequenceFeatureExtractionTestMixin) run on MAEST.

Collected only when MAEST_TRANSFORMERS_SRC names a transformers source checkout (its `tests/` package is not on
PyPI's wheel; the sdist and the git repository have it): see `.ci/transformers-common-tests` and
docs/compatibility.md. The tiny tester mirrors transformers' ASTModelTester (AST is the architecture MAEST extends),
and the test classes mirror ASTModelTest's flags. Only tests that hit one of MAEST's two documented conventions are
skipped here, each with the convention named; everything else must pass.
"""

import os
import random
import sys
import unittest
from pathlib import Path

import numpy as np

_SRC = os.environ.get("MAEST_TRANSFORMERS_SRC")
if not _SRC or not (Path(_SRC) / "tests" / "test_modeling_common.py").is_file():
    raise unittest.SkipTest(
        "MAEST_TRANSFORMERS_SRC is not set to a transformers source checkout (with tests/test_modeling_common.py)."
    )
# transformers' tests are the package `tests` of that checkout; ours is also named `tests`, so the checkout's `tests`
# package is imported under its own name by putting the checkout root first and dropping our `tests` from the cache.
_saved_tests = {name: module for name, module in sys.modules.items() if name == "tests" or name.startswith("tests.")}
for _name in _saved_tests:
    del sys.modules[_name]
sys.path.insert(0, str(Path(_SRC).resolve()))
try:
    from tests.test_configuration_common import ConfigTester
    from tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor
    from tests.test_sequence_feature_extraction_common import SequenceFeatureExtractionTestMixin
finally:
    sys.path.remove(str(Path(_SRC).resolve()))
    for _name in [n for n in sys.modules if n == "tests" or n.startswith("tests.")]:
        sys.modules[f"transformers_src_{_name}"] = sys.modules.pop(_name)
    sys.modules.update(_saved_tests)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from configuration_maest import MaestConfig  # noqa: E402
from feature_extraction_maest import MaestFeatureExtractor  # noqa: E402
from modeling_maest import MaestForAudioClassification, MaestModel  # noqa: E402

# The two documented MAEST conventions (README, "Model inputs and outputs"; docs/compatibility.md).
FRAME_MASK = (
    "MAEST convention (frame-level attention_mask): attention_mask is (batch, frames) over the log-mel frames, "
    "right padding only, not a (batch, tokens) mask over the sequence the common test builds"
)
WINDOW_MASK = (
    "MAEST convention (BoolTensor window_mask): MaestAudioClassifierOutput.window_mask is a BoolTensor (True where "
    "an item has that window), which the common test's float comparison does not expect"
)


class MaestModelTester:
    """A tiny MAEST in the shape of transformers' ASTModelTester: 24 frames x 16 mel bins, 2 x 2 patches, stride 2."""

    def __init__(
        self,
        parent,
        batch_size=13,
        patch_size=2,
        max_length=24,
        num_mel_bins=16,
        is_training=True,
        use_labels=True,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        type_sequence_label_size=10,
        initializer_range=0.02,
        frequency_stride=2,
        time_stride=2,
        attn_implementation="eager",
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.patch_size = patch_size
        self.max_length = max_length
        self.num_mel_bins = num_mel_bins
        self.is_training = is_training
        self.use_labels = use_labels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.type_sequence_label_size = type_sequence_label_size
        self.initializer_range = initializer_range
        self.frequency_stride = frequency_stride
        self.time_stride = time_stride
        self.attn_implementation = attn_implementation
        # Computed independently of MaestConfig: patches of the grid plus the CLS and distillation tokens.
        frequency = (num_mel_bins - patch_size) // frequency_stride + 1
        time = (max_length - patch_size) // time_stride + 1
        self.seq_length = frequency * time + 2

    def prepare_config_and_inputs(self):
        input_values = floats_tensor([self.batch_size, self.max_length, self.num_mel_bins])
        labels = ids_tensor([self.batch_size], self.type_sequence_label_size) if self.use_labels else None
        return self.get_config(), input_values, labels

    def get_config(self):
        return MaestConfig(
            patch_size=self.patch_size,
            max_length=self.max_length,
            num_mel_bins=self.num_mel_bins,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            initializer_range=self.initializer_range,
            frequency_stride=self.frequency_stride,
            time_stride=self.time_stride,
            attn_implementation=self.attn_implementation,
        )

    def create_and_check_model(self, config, input_values, labels):
        model = MaestModel(config=config).eval()
        result = model(input_values)
        self.parent.assertEqual(result.last_hidden_state.shape, (self.batch_size, self.seq_length, self.hidden_size))

    def prepare_config_and_inputs_for_common(self):
        config, input_values, _ = self.prepare_config_and_inputs()
        return config, {"input_values": input_values}


class MaestModelTest(ModelTesterMixin, unittest.TestCase):
    """ModelTesterMixin on MaestModel and MaestForAudioClassification, with ASTModelTest's flags."""

    all_model_classes = (MaestModel, MaestForAudioClassification)
    fx_compatible = False
    test_resize_embeddings = False

    @classmethod
    def setUpClass(cls):
        # The mixin picks labels and skips base models by looking the class names up in transformers' name mappings,
        # where a native model such as AST is listed. MAEST is remote code, so it is listed there for these tests
        # only, as a native model would be (and removed afterwards).
        from transformers.models.auto import modeling_auto

        cls._registered = [
            (modeling_auto.MODEL_MAPPING_NAMES, "MaestModel"),
            (modeling_auto.MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES, "MaestForAudioClassification"),
        ]
        for mapping, name in cls._registered:
            mapping["maest"] = name
        # test_torch_save_load looks the config up in the AutoModel mapping, where a native model is found.
        modeling_auto.MODEL_MAPPING.register(MaestConfig, MaestModel, exist_ok=True)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        from transformers.models.auto import modeling_auto

        for mapping, _ in cls._registered:
            mapping.pop("maest", None)
        modeling_auto.MODEL_MAPPING._extra_content.pop(MaestConfig, None)
        super().tearDownClass()

    def setUp(self):
        self.model_tester = MaestModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=MaestConfig, has_text_modality=False, hidden_size=32, num_attention_heads=4
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip(reason="MAEST, like AST, does not use inputs_embeds")
    def test_inputs_embeds(self):
        pass

    def test_model_get_set_embeddings(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), nn.Module)
            output_embeddings = model.get_output_embeddings()
            self.assertTrue(output_embeddings is None or isinstance(output_embeddings, nn.Linear))

    def test_forward_signature(self):
        import inspect

        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            arg_names = list(inspect.signature(model_class(config).forward).parameters)
            self.assertListEqual(arg_names[:1], ["input_values"])

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    @unittest.skip(reason=WINDOW_MASK)
    def test_model_outputs_equivalence(self):
        pass


# The eager/SDPA comparisons that pass a padding mask build it over the tokens, (batch, seq_length); the variants
# without a mask ("no_attn_mask") still run.
for _name in [
    n
    for n in dir(ModelTesterMixin)
    if n.startswith("test_eager_matches_sdpa_inference_") and "_pad_" in n and "no_attn_mask" not in n
]:
    setattr(MaestModelTest, _name, unittest.skip(reason=FRAME_MASK)(getattr(ModelTesterMixin, _name)))


# --- Feature extractor -------------------------------------------------------------------------------------------

global_rng = random.Random()


def floats_list(shape, scale=1.0, rng=None):
    """A list of lists of random floats in [0, scale)."""
    rng = rng or global_rng
    return [[rng.random() * scale for _ in range(shape[1])] for _ in range(shape[0])]


class MaestFeatureExtractionTester:
    """Inputs for SequenceFeatureExtractionTestMixin, as transformers' ASTFeatureExtractionTester makes them."""

    def __init__(
        self,
        parent,
        batch_size=7,
        min_seq_length=400,
        max_seq_length=2000,
        feature_size=1,
        padding_value=0.0,
        sampling_rate=16000,
        return_attention_mask=True,
        do_normalize=True,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.min_seq_length = min_seq_length
        self.max_seq_length = max_seq_length
        self.seq_length_diff = (max_seq_length - min_seq_length) // (batch_size - 1)
        self.feature_size = feature_size
        self.padding_value = padding_value
        self.sampling_rate = sampling_rate
        self.return_attention_mask = return_attention_mask
        self.do_normalize = do_normalize

    def prepare_feat_extract_dict(self):
        return {
            "feature_size": self.feature_size,
            "padding_value": self.padding_value,
            "sampling_rate": self.sampling_rate,
            "return_attention_mask": self.return_attention_mask,
            "do_normalize": self.do_normalize,
        }

    def prepare_inputs_for_common(self, equal_length=False, numpify=False):
        if equal_length:
            speech_inputs = floats_list((self.batch_size, self.max_seq_length))
        else:  # increasing lengths
            speech_inputs = [
                [value for row in floats_list((length, self.feature_size)) for value in row]
                for length in range(self.min_seq_length, self.max_seq_length, self.seq_length_diff)
            ]
        if numpify:
            speech_inputs = [np.asarray(x) for x in speech_inputs]
        return speech_inputs


class MaestFeatureExtractionTest(SequenceFeatureExtractionTestMixin, unittest.TestCase):
    """SequenceFeatureExtractionTestMixin on MaestFeatureExtractor, plus ASTFeatureExtractionTest's batching checks."""

    feature_extraction_class = MaestFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = MaestFeatureExtractionTester(self)

    def test_call(self):
        feat_extract = self.feature_extraction_class(**self.feat_extract_tester.prepare_feat_extract_dict())
        # AST's test uses 800 - 1200 samples; MAEST needs one 16-frame patch (at least 3585 samples at 16 kHz).
        speech_inputs = [floats_list((1, x))[0] for x in range(4000, 4600, 200)]
        np_speech_inputs = [np.asarray(speech_input) for speech_input in speech_inputs]
        # Not batched: a list and an array give the same features.
        first = feat_extract(speech_inputs[0], return_tensors="np").input_values
        second = feat_extract(np_speech_inputs[0], return_tensors="np").input_values
        self.assertTrue(np.allclose(first, second, atol=1e-3))
        # Batched.
        first = feat_extract(speech_inputs, padding=True, return_tensors="np").input_values
        second = feat_extract(np_speech_inputs, padding=True, return_tensors="np").input_values
        for a, b in zip(first, second):
            self.assertTrue(np.allclose(a, b, atol=1e-3))
        # A 2-D array is a batch of mono signals.
        speech_inputs = [floats_list((1, x))[0] for x in (4000, 4000, 4000)]
        first = feat_extract(speech_inputs, return_tensors="np").input_values
        second = feat_extract(np.asarray(speech_inputs), return_tensors="np").input_values
        self.assertEqual(len(first), 3)
        self.assertEqual(len(second), 3)
        for a, b in zip(first, second):
            self.assertTrue(np.allclose(a, b, atol=1e-3))

    def test_double_precision_pad(self):
        feature_extractor = self.feature_extraction_class(**self.feat_extract_tester.prepare_feat_extract_dict())
        np_speech_inputs = np.random.rand(100).astype(np.float64)
        for inputs in [np_speech_inputs.tolist(), np_speech_inputs]:
            np_processed = feature_extractor.pad([{"input_values": inputs}], return_tensors="np")
            self.assertTrue(np_processed.input_values.dtype == np.float32)
            pt_processed = feature_extractor.pad([{"input_values": inputs}], return_tensors="pt")
            self.assertTrue(pt_processed.input_values.dtype == torch.float32)
