"""The optional `groundingdino` backend (official package), opt-in: `pytest -m groundingdino`.

Needs `pip install '.[groundingdino]'` (rf-groundingdino and a torchvision matching torch); skipped
where the package cannot be imported. The model is the official SwinT architecture with a small
transformer and a tiny BERT text encoder, random weights, written as the official .py config and
.pth checkpoint and loaded through the backend's own loading path.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from grit_pipeline.grounding import DetectorConfig, GroundingRequest, load_detector
from grit_pipeline.grounding.spans import normalize_caption
from grit_pipeline.grounding.tiny import build_tokenizer, caption_vocab
from grit_pipeline.text import CharSpan

pytestmark = pytest.mark.groundingdino

OFFICIAL_CONFIG = """
batch_size = 1
modelname = "groundingdino"
backbone = "swin_T_224_1k"
position_embedding = "sine"
pe_temperatureH = 20
pe_temperatureW = 20
return_interm_indices = [1, 2, 3]
backbone_freeze_keywords = None
enc_layers = 1
dec_layers = 2
pre_norm = False
dim_feedforward = 64
hidden_dim = 64
dropout = 0.0
nheads = 2
num_queries = 30
query_dim = 4
num_patterns = 0
num_feature_levels = 4
enc_n_points = 2
dec_n_points = 2
two_stage_type = "standard"
two_stage_bbox_embed_share = False
two_stage_class_embed_share = False
transformer_activation = "relu"
dec_pred_bbox_embed_share = True
dn_box_noise_scale = 1.0
dn_label_noise_ratio = 0.5
dn_label_coef = 1.0
dn_bbox_coef = 1.0
embed_init_tgt = True
dn_labelbook_size = 2000
max_text_len = 256
text_encoder_type = {bert!r}
use_text_enhancer = True
use_fusion_layer = True
use_checkpoint = False
use_transformer_ckpt = False
use_text_cross_attention = True
text_dropout = 0.0
fusion_dropout = 0.0
fusion_droppath = 0.0
sub_sentence_present = True
"""


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    pytest.importorskip("groundingdino", exc_type=ImportError)
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("official")
    bert = root / "bert"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(caption_vocab()), hidden_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    BertModel(config).save_pretrained(bert)
    build_tokenizer(bert).save_pretrained(bert)
    detector = root / "detector"
    detector.mkdir()
    (detector / "tiny_swint.py").write_text(OFFICIAL_CONFIG.format(bert=str(bert)))
    args = SLConfig.fromfile(str(detector / "tiny_swint.py"))
    args.device = "cpu"
    torch.save({"model": build_model(args).state_dict()}, detector / "weights.pth")
    return detector


def test_official_backend_scores_spans_like_the_official_token_spans_mode(official_dir):
    from groundingdino.util.vl_utils import create_positive_map_from_span

    from grit_pipeline.grounding.official_backend import official_transform

    detector = load_detector(
        DetectorConfig(model=str(official_dir), backend="groundingdino", box_threshold=0.0, nms_iou=1.0)
    )
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    caption = "A dog on the grass"
    spans = (CharSpan(0, 5), CharSpan(9, 18))
    [result] = detector.ground([GroundingRequest(image, caption, spans)])
    assert len(result.boxes) == 2 and all(result.boxes)
    assert all(sb.box.is_valid() for span in result.boxes for sb in span)

    prompt = normalize_caption(caption).text
    with torch.no_grad():
        outputs = detector.model(official_transform(image)[None], captions=[prompt])
    probs = outputs["pred_logits"].sigmoid()[0]  # (queries, 256)
    positive = create_positive_map_from_span(detector.tokenizer(prompt), token_span=[[[0, 5]], [[9, 18]]])
    expected = (positive @ probs.T).max(dim=1).values  # official token_spans scoring, best query per span
    got = [span[0].score for span in result.boxes]
    assert got == pytest.approx(expected.tolist(), abs=1e-4)
