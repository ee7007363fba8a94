"""Small text models for the docs (random weights, built from configs: nothing is downloaded).

resnet-trace summary --model docs/examples/text_models.py:bert -i 'input_ids=2x16:int64,attention_mask=2x16:int64'
"""

from __future__ import annotations

from torch import nn


def bert() -> nn.Module:
    """A two-layer BERT classifier, as transformers builds it from a config."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    return BertForSequenceClassification(config)


def gpt2() -> nn.Module:
    """A two-layer GPT-2 language model (its head shares the token embedding's weights)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=128))


class LSTMClassifier(nn.Module):
    """Token ids -> embedding -> two-layer bidirectional LSTM -> the last step's classes."""

    def __init__(self, vocab: int = 1000, dim: int = 64, hidden: int = 128, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, ids):
        out, _ = self.lstm(self.embed(ids))
        return self.head(out[:, -1])


def gpt2_small_eager() -> nn.Module:
    """GPT-2 small (124M) with eager attention: the model Korthikanti et al.'s formula describes."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(attn_implementation="eager"))
