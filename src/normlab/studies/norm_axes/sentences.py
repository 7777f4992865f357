"""The sentences of posts 002, 003 and 004 that say which axes each norm reduces over and what each norm stores,
in the posts' words, with the claims that test them or why none can."""

from __future__ import annotations

from normlab.engine.spec import SeedSentence

POST_TITLES = {
    "002": "超细节的BatchNorm/BN/LayerNorm/LN知识点",
    "003": "Transformer 模型介绍(五)—归一化 Add & Norm",
    "004": "正则化和批标准化",
}

NCHW = ("nchw-batchnorm", "nchw-layernorm", "nchw-instancenorm", "nchw-groupnorm")

SEED_SENTENCES: tuple[SeedSentence, ...] = (
    # ---------------------------------------------------------------- post 002
    SeedSentence(
        "002", "这个会和模型权重一起,在训练完成后一并保存下来。",
        "The moving-average mean and variance are saved together with the model weights after training.",
        tested_by=("bn-state",)),
    SeedSentence(
        "002", "1)每个神经元在训练过程中得到的均值和方差,通过移动平均得到",
        "BN stores (1) each neuron's mean and variance, obtained during training by a moving average.",
        tested_by=("bn-state",)),
    SeedSentence(
        "002", "2)每个神经元上的缩放参数 γ 和平移参数 β",
        "(2) each neuron's scale γ and shift β.",
        tested_by=("bn-state",)),
    SeedSentence(
        "002", "LN 只包括上面的第 2 部分参数,因为它和 batch 无关,无需记录第 1 部分参数。",
        "LN stores only part (2), γ and β: it does not involve the batch, so it keeps no running statistics.",
        tested_by=("ln-state",)),
    SeedSentence(
        "002", "1)两者做 Norm 的维度不一样,BN 是在 Batch 维,而 LN 一般是在最后一维。",
        "BN and LN normalize over different dimensions: BN over the batch dimension, LN usually over the last one.",
        tested_by=("seed002-bn-loop", "seed002-ln-loop", "nchw-batchnorm")),
    SeedSentence(
        "002", "2)BN 需要在训练过程中,滑动平均累积每个神经元的均值和方差,并保存在模型文件中用于推理过程,而 LN 不需要。",
        "BN accumulates each neuron's mean and variance by a moving average and saves them in the model file for "
        "inference; LN does not need to.",
        tested_by=("bn-state", "ln-state")),
    SeedSentence(
        "002", "3)因为 Norm 维度的差异,使得它们适用的领域也有差异,BN 更多用于 CV 领域,LN 更多用于 NLP 领域。",
        "Because of the different dimensions they suit different fields: BN mostly vision, LN mostly NLP.",
        why_not="a statement about where each norm is used in practice, not a property of the layers"),
    SeedSentence(
        "002", "在 CV 中常常使用 BN,它是在 NHW 维度进行了归一化,而 Channel 维度的信息原封不动,"
               "因为可以认为在 CV 应用场景中,数据在不同 channel 中的信息很重要,如果对其进行归一化将会损失不同 channel 的差异信息。",
        "In vision BN normalizes over N, H, W and leaves the channel dimension untouched (one statistic per "
        "channel), since the differences between channels carry information (tested: the axes; the rationale "
        "is not measured).",
        tested_by=("nchw-batchnorm",)),
    SeedSentence(
        "002", "而 NLP 中不同 batch 样本的信息关联性不大,而且由于不同的句子长度不同,强行归一化会损失不同样本间的差异信息,"
               "所以就没在 batch 维度进行归一化,而是选择 LN,只考虑的句子内部维度的归一化。",
        "In NLP, samples of a batch are weakly related and sentences differ in length, so normalizing over the "
        "batch would lose the differences between samples; LN normalizes only within a sentence.",
        why_not="the reason ('samples are weakly related', 'information is lost') needs a language task; the axes "
                "LN uses are tested by seed002-ln-loop and ln-independent-of-length"),
    SeedSentence(
        "002", "BN 是在 batch_size 维做 Norm,则:",
        "BN normalizes over the batch_size dimension, i.e. (post 002's loop) for each (seq, hidden) position, "
        "over the batch.",
        tested_by=("seed002-bn-loop", "seed002-bn-loop-is-batchnorm1d-hidden")),
    SeedSentence(
        "002", "LN是在 hidden_size 维做 Norm,则:",
        "LN normalizes over the hidden_size dimension, i.e. (post 002's loop) for each (batch, seq) token, over "
        "hidden.",
        tested_by=("seed002-ln-loop",)),
    SeedSentence(
        "002", "也就是说,对哪个维度做 Norm,就在其他维度不动的情况下,基于该维度下的所有元素计算均值和方差,然后再做 Norm。",
        "To normalize over a dimension: holding the other dimensions fixed, compute the mean and variance over "
        "all elements along that dimension, then normalize.",
        tested_by=("seed002-bn-loop", "seed002-ln-loop", *NCHW)),
    # ---------------------------------------------------------------- post 003
    SeedSentence(
        "003", "批标准化的操作是基于批量大小(batch size)这个维度进行的,即对于一个训练批次(batch),"
               "我们计算该批次所有样本在每个特征维度上的均值和方差,然后根据这些统计量对数据进行标准化。",
        "Batch normalization works along the batch-size dimension: for a batch it computes, for each feature, "
        "the mean and variance over all samples, and standardizes with them.",
        tested_by=("nchw-batchnorm", "seed002-bn-loop", "bn-depends-on-batch")),
    SeedSentence(
        "003", "然后对标准化后的数据进行再平移和再缩放,即引入可学习的参数 γ 和 β,调整数据的分布。",
        "Then BN shifts and rescales the standardized data with learnable γ and β.",
        tested_by=("bn-state",)),
    SeedSentence(
        "003", "与批归一化不同,它是通过对隐藏层大小(hidden size)这个维度进行标准化来稳定数据的分布。",
        "Unlike BN, LN standardizes along the hidden-size dimension.",
        tested_by=("seed002-ln-loop",)),
    SeedSentence(
        "003", "在层标准化中,对于每个样本(例如,句子中的每个单词),我们计算该样本的均值和方差,而不依赖于批次的大小。",
        "In LN, for each sample (e.g. each word of a sentence) the mean and variance are computed over that "
        "sample, independently of the batch size.",
        tested_by=("seed002-ln-loop", "ln-in-gn-per-sample", "bn-depends-on-batch")),
    SeedSentence(
        "003", "每个样本的标准化过程是独立进行的,保证了样本间的相互独立。",
        "Each sample is standardized on its own, keeping samples independent of each other.",
        tested_by=("ln-in-gn-per-sample", "bn-depends-on-batch")),
    SeedSentence(
        "003", "相比之下,层标准化不依赖批次的大小和输入序列的长度,因此能够在处理变长文本时保持稳定性和高效性。",
        "LN depends on neither the batch size nor the sequence length, so it stays stable and efficient on "
        "variable-length text (tested: the independence; stability and efficiency are not measured).",
        tested_by=("ln-in-gn-per-sample", "ln-independent-of-length", "in-gn-depend-on-length")),
    SeedSentence(
        "003", "对于给定的样本 x,假设 N 为批量大小,D 为特征维度,层归一化首先会计算每个样本的均值(μ)和方差()。",
        "For a batch of N samples with D features, LN first computes each sample's mean μ and variance.",
        tested_by=("nchw-layernorm", "seed002-ln-loop")),
    SeedSentence(
        "003", "其中,γ 和 β 是可学习的参数,用于对标准化后的数据进行线性变换,从而调整数据的分布,允许模型更灵活地适应不同的任务。",
        "γ and β (of LN) are learnable parameters that apply a linear map to the standardized data.",
        tested_by=("ln-state",)),
    SeedSentence(
        "003", "实例归一化是基于每个样本进行标准化,即对于每个样本(例如一张图像),在每个特征通道上进行独立的归一化。",
        "Instance normalization standardizes each sample (e.g. an image) separately in each feature channel.",
        tested_by=("nchw-instancenorm", "ln-in-gn-per-sample")),
    SeedSentence(
        "003", "组归一化则是将多个通道组合在一起进行标准化,适用于图像的处理。",
        "Group normalization standardizes several channels together as a group; it suits image processing "
        "(tested: the axes).",
        tested_by=("nchw-groupnorm",)),
    SeedSentence(
        "003", "在NLP任务中,通常不使用实例标准化和组标准化,而是采用层标准化来保证处理变长序列的稳定性。",
        "NLP tasks usually use LN rather than IN or GN, for stability on variable-length sequences.",
        why_not="a statement about practice; what this study can show is that IN and GN on a sequence pool over its "
                "positions (in-gn-depend-on-length) while LN does not (ln-independent-of-length)"),
    # ---------------------------------------------------------------- post 004
    SeedSentence(
        "004", "num_features:一个样本特征数量(最重要)",
        "BatchNorm's num_features: the number of features of one sample (the most important argument).",
        tested_by=("bn-state",)),
    SeedSentence(
        "004", "这里的weight和bias是在训练中学习的",
        "BN's weight and bias are learned in training (the running mean and variance are not).",
        tested_by=("bn-state",)),
    SeedSentence(
        "004", "这里计算均值和方差时,将同一批次样本的同一特征在一起计算",
        "BatchNorm1d computes the mean and variance of each feature over the samples of the batch.",
        tested_by=("seed002-bn-loop", "nchw-batchnorm")),
    SeedSentence(
        "004", "可以看到这里均值,方差,权重以及偏置的维度都是3,因为BN是将不同样本的同一特征一起算均值等,所以维度与特征数一致。",
        "BatchNorm2d(3)'s mean, variance, weight and bias all have size 3: BN pools the same feature over "
        "samples, so the sizes equal the number of features.",
        tested_by=("bn-state", "nchw-batchnorm")),
    SeedSentence(
        "004", "不同的点在于均值和方差的求取方式",
        "BN, LN, IN and GN all normalize the same way and differ only in how the mean and variance are computed "
        "(over which elements).",
        tested_by=NCHW),
    SeedSentence(
        "004", "思路:逐层计算均值和方差",
        "LayerNorm: compute the mean and variance layer by layer (per sample, over the layer's features).",
        tested_by=("nchw-layernorm",)),
    SeedSentence(
        "004", "不再有running_mean和running_var",
        "LayerNorm (and, said again under GroupNorm, GN) no longer has running_mean and running_var.",
        tested_by=("ln-state", "gn-state")),
    SeedSentence(
        "004", "gamma和beta为逐元素的",
        "LayerNorm's gamma and beta are element-wise.",
        tested_by=("ln-state",)),
    SeedSentence(
        "004", "这里weight和bias的size都是(3, 2, 2),因为每个样本都有3个特征且每个特征图为(2, 2)",
        "LayerNorm((3, 2, 2))'s weight and bias both have size (3, 2, 2): each sample has 3 features of size (2, 2).",
        tested_by=("ln-state",)),
    SeedSentence(
        "004", "所以看出来LayerNorm更像是逐元素的计算均值和方差。",
        "So LayerNorm seems to compute the mean and variance element-wise.",
        tested_by=("seed004-ln-elementwise-stats", "nchw-layernorm")),
    SeedSentence(
        "004", "思路:逐Instance(channel)计算均值和方差",
        "InstanceNorm: compute the mean and variance per instance (channel).",
        tested_by=("nchw-instancenorm",)),
    SeedSentence(
        "004", "BatchNorm2d会将同一批次的同一特征,比如这里3个样本的第一个特征合并计算均值和方差,"
               "而Instance Normalization,会每个样本的每个特征图单独计算均值和方差。",
        "BatchNorm2d pools the same feature over the batch (e.g. the first feature of the 3 samples); "
        "InstanceNorm computes the mean and variance of each feature map of each sample separately.",
        tested_by=("nchw-batchnorm", "nchw-instancenorm")),
    SeedSentence(
        "004", "思路:数据不够,通道来凑",
        "GroupNorm: not enough data (samples), so pool channels instead.",
        tested_by=("nchw-groupnorm", "ln-in-gn-per-sample")),
    SeedSentence(
        "004", "gamma和beta为逐通道(channel)的",
        "GroupNorm's gamma and beta are per channel.",
        tested_by=("gn-state",)),
    SeedSentence(
        "004", "起因:小batch样本中,BN估计的值不准",
        "GroupNorm's motivation: with small batches BN's estimates are inaccurate.",
        why_not="about estimation error and accuracy at small batch: the batch-size study measures it"),
    SeedSentence(
        "004", "起因:BN不适用于变长的网络,如RNN",
        "LayerNorm's motivation: BN does not suit variable-length networks such as RNNs.",
        why_not="needs a recurrent model on variable-length data; this study only shows which elements each norm "
                "pools (ln-independent-of-length)"),
    SeedSentence(
        "004", "起因:BN在图像生成(Image Generation)中不适用",
        "InstanceNorm's motivation: BN does not suit image generation.",
        why_not="needs an image-generation model; not in this lab"),
)
