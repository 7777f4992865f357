"""Post 003's claim sentences that batch-size owns (its BN/LN/IN/GN section: batch size, small batches, which
norm suits where; what each norm averages over is norm-axes' part), each tested by claims or marked why not."""

from __future__ import annotations

from normlab.engine.spec import SeedSentence

POST_TITLES = {"003": "Transformer 模型介绍(五)—归一化 Add & Norm"}

_NOT_SEQUENCES = ("this study trains a CNN on images: there are no sequences of varying length here (the part "
                  "about batch size is tested by the neighbouring sentences' claims)")

SEED_SENTENCES = (
    SeedSentence(
        "003", "批归一化(Batch Normalization,BN)是最常见的标准化方式之一,通常用于卷积神经网络(CNN)或全连接神经网络(FCN)。",
        "Batch Normalization (BN) is one of the most common normalizations, usually used in convolutional (CNN) "
        "or fully connected networks (FCN).",
        why_not="a statement about what practitioners use; training runs measure how well a norm works, not "
                "how often it is chosen"),
    SeedSentence(
        "003", "批标准化的优势在于它能够有效缓解梯度消失和梯度爆炸问题,加速模型的训练过程,特别是在深层网络中。",
        "BN's advantage is that it effectively mitigates vanishing and exploding gradients and speeds up "
        "training, especially in deep networks. (Tested here: the speed-up, BN vs no norm early in training of a "
        "3-layer CNN; the gradients of deep networks are deep-bn's.)",
        tested_by=("bn-speeds-training",)),
    SeedSentence(
        "003", "在层标准化中,对于每个样本(例如,句子中的每个单词),我们计算该样本的均值和方差,而不依赖于批次的大小。",
        "In LayerNorm, for each sample (e.g. each word of a sentence) we compute that sample's mean and variance, "
        "independent of the batch size.",
        tested_by=("ln-output-batch-independent", "controls-flat-ghost")),
    SeedSentence(
        "003", "每个样本的标准化过程是独立进行的,保证了样本间的相互独立。",
        "Each sample is normalized on its own, which keeps samples independent of each other.",
        tested_by=("ln-output-batch-independent", "bn-output-batch-dependent")),
    SeedSentence(
        "003", "这对于 Transformer 来说尤其重要,因为 Transformer 通常处理的是变长序列,在批量归一化中可能会受到批次大小变化的影响,"
               "而层归一化则能保持稳定性。",
        "This matters especially for Transformers, which usually process variable-length sequences: under "
        "BatchNorm they may be affected by changes of the batch size, while LayerNorm stays stable. (Tested "
        "here: BN affected by its batch, LN not, in a CNN; not Transformers.)",
        tested_by=("bn-degrades-small-ghost", "bn-output-batch-dependent", "controls-flat-ghost")),
    SeedSentence(
        "003", "层标准化的优势在于它不依赖于批次大小,因此对于NLP任务中常见的变长输入序列尤其适用。",
        "LayerNorm's advantage is that it does not depend on the batch size, so it suits the variable-length "
        "inputs common in NLP. (Tested here: the independence of the batch size; not NLP.)",
        tested_by=("ln-output-batch-independent", "controls-flat-ghost")),
    SeedSentence(
        "003", "如果使用批标准化,可能会受到长度不一致的影响,导致模型训练不稳定。",
        "With BatchNorm, unequal lengths may make training unstable.", why_not=_NOT_SEQUENCES),
    SeedSentence(
        "003", "相比之下,层标准化不依赖批次的大小和输入序列的长度,因此能够在处理变长文本时保持稳定性和高效性。",
        "LayerNorm, in contrast, depends neither on the batch size nor on the sequence length, so it stays "
        "stable and efficient on variable-length text. (Tested here: the batch size part; not text.)",
        tested_by=("ln-output-batch-independent",)),
    SeedSentence(
        "003", "实例归一化(Instance Normalization)和组归一化(Group Normalization)通常用于图像处理任务,尤其是在生成对抗网络(GAN)中应用广泛。",
        "Instance Normalization and Group Normalization are usually used for image tasks, widely in GANs.",
        why_not="a statement about what practitioners use (and GANs are not trained here); how GN does on "
                "images is tested by the next sentence's claim"),
    SeedSentence(
        "003", "组归一化则是将多个通道组合在一起进行标准化,适用于图像的处理。",
        "GroupNorm normalizes groups of channels together and suits image processing. (Tested here: that it "
        "suits an image CNN, GN vs no norm; which channels it averages over is norm-axes'.)",
        tested_by=("gn-suits-images",)),
    SeedSentence(
        "003", "在NLP任务中,通常不使用实例标准化和组标准化,而是采用层标准化来保证处理变长序列的稳定性。",
        "In NLP, Instance and Group Normalization are usually not used; LayerNorm is, to keep variable-length "
        "sequences stable.", why_not="a statement about NLP practice; this study trains an image CNN"),
)
