"""Tiny third-party models built offline from configs (random weights, no hub access), and their batches.

Imported by name (``from third_party_models import ...``: tests/ is on the path through its conftest).
Each builder seeds torch first, so two calls give the same weights.
"""

from __future__ import annotations

import torch
import transformers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    ResNetConfig,
    ResNetForImageClassification,
)

transformers.logging.set_verbosity_error()  # the tiny configs trip warnings about unused special tokens

VOCAB = 64


def gpt2() -> GPT2LMHeadModel:
    """GPT-2 (LayerNorm, Conv1D, tied embedding and head), 2 layers of width 32."""
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=16, bos_token_id=0,
                        eos_token_id=0, loss_type="ForCausalLM")
    return GPT2LMHeadModel(config)


def llama() -> LlamaForCausalLM:
    """Llama (LlamaRMSNorm, grouped-query attention, rotary embeddings), 2 layers of width 32."""
    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, hidden_size=32,
                         intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=16, bos_token_id=0,
                         eos_token_id=0, pad_token_id=0, loss_type="ForCausalLM")
    return LlamaForCausalLM(config)


def bert() -> BertForMaskedLM:
    """BERT (post-LN encoder, GELU), 2 layers of width 32."""
    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64,
                        vocab_size=VOCAB, max_position_embeddings=16, type_vocab_size=2, pad_token_id=0,
                        loss_type="ForMaskedLM")
    return BertForMaskedLM(config)


def resnet() -> ResNetForImageClassification:
    """ResNet with BatchNorm2d after every convolution (basic blocks, 2 stages)."""
    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                          layer_type="basic", num_labels=5)
    return ResNetForImageClassification(config)


BUILDERS = {"gpt2": gpt2, "llama": llama, "bert": bert, "resnet": resnet}


def batch(name: str, step: int) -> dict[str, torch.Tensor]:
    """The keyword inputs (labels included) of one training batch, fixed by ``step``."""
    generator = torch.Generator().manual_seed(100 + step)
    if name == "resnet":
        return {"pixel_values": torch.randn(4, 3, 16, 16, generator=generator),
                "labels": torch.randint(0, 5, (4,), generator=generator)}
    ids = torch.randint(1, VOCAB, (2, 8), generator=generator)
    return {"input_ids": ids, "labels": ids}
