"""Every claim sentence of post 001, in the post's words, with the claims that test it or why none can."""

from __future__ import annotations

from normlab.engine.spec import SeedSentence

POST_TITLES = {"001": "什么是Layer Normalization?"}

S = "001"
SEED_SENTENCES: tuple[SeedSentence, ...] = (
    SeedSentence(
        S, "BN的目的是使得每个batch的输入数据在每个维度上的均值为0、方差为1(batch内,数据维度A的所有数值均值为0、方差为1,"
           "维度B、C等以此类推)",
        "BN makes each dimension of a batch's data mean 0 and variance 1 (within the batch, all values of "
        "dimension A have mean 0 and variance 1, and so on for B, C).",
        tested_by=("bn-feature-mean-0", "bn-feature-var-1", "bn-equalizes-features")),
    SeedSentence(
        S, "这是由于神经网络的每一层输出数据分布都会发生变化,随着网络层数的增加,内部协变量的偏移程度会变大。",
        "Each layer's output distribution shifts, and internal covariate shift grows with depth.",
        why_not="a claim about distributions shifting during training in deep networks; this study trains "
                "nothing and has one layer (deep-bn measures activations layer by layer)"),
    SeedSentence(
        S, "我们在数据预处理阶段使用sklearn等工具进行的Normalization仅仅解决了第一层输入的问题,而隐藏层中各层的输入问题仍然存在。",
        "Normalizing in preprocessing fixes only the first layer's input, not the hidden layers' inputs.",
        why_not="the motivation for putting a norm inside the model, not a measurable property of LN or BN"),
    SeedSentence(
        S, "因此我们将BN嵌入到模型结构内部,用于把每一个batch的数据拉回正态分布。",
        "So BN is put inside the model to pull each batch's data back to a normal distribution.",
        tested_by=("bn-makes-features-normal",)),
    SeedSentence(
        S, "然而,BN通过对每个维度进行正态分布处理,会使得各个维度之间的数值大小关系失真,也就是单一样本内部的特征关系被打乱了。",
        "But by normalizing each dimension, BN distorts the magnitude relations between dimensions: the "
        "feature relations within a single sample are scrambled.",
        tested_by=("bn-distorts-sample-relations",)),
    SeedSentence(
        S, "显然,这对于处理文本向量等序列数据来说并不友好,文本向量内部的语义关系会受到BN的影响。",
        "This is bad for sequence data such as text vectors, whose internal semantic relations BN affects.",
        why_not="needs a text model and a measure of semantic relations; the study has neither"),
    SeedSentence(
        S, "因此,预训练模型、大语言模型等内部一般不会采用BN,而是采用Layer Normalization。",
        "Hence pretrained and large language models generally use LayerNorm, not BN.",
        why_not="a statement about practice in published models, not something a run can measure"),
    SeedSentence(
        S, "Layer Normalization对神经网络中每一层的输出进行归一化处理,确保单条样本内部各特征的均值为0、方差为1",
        "LayerNorm normalizes each layer's output so that the features within a single sample have mean 0 and "
        "variance 1.",
        tested_by=("batch-sample-mean-0", "batch-sample-var-1", "single-sample-mean-0", "single-sample-var-1")),
    SeedSentence(
        S, "计算均值和方差:对每个样本的特征维度计算均值和方差。",
        "Mean and variance: computed over each sample's features.",
        tested_by=("single-sample-mean-0", "single-sample-var-1", "batch-sample-mean-0", "batch-sample-var-1")),
    SeedSentence(
        S, "归一化处理:使用计算出的均值和方差对当前样本进行归一化,使其均值为0,方差为1。",
        "Normalization: the sample is normalized with that mean and variance to mean 0 and variance 1.",
        tested_by=("single-sample-mean-0", "single-sample-var-1", "batch-sample-mean-0", "batch-sample-var-1",
                   "seed-check-var-1")),
    SeedSentence(
        S, "缩放和平移:引入可学习的参数进行尺度和偏移变换,以恢复模型的表达能力。",
        "Scale and shift: learnable parameters rescale and shift the output to restore the model's expressive "
        "power (tested: the learnable per-feature scale and shift exist; whether they restore expressive power "
        "needs training and is not measured).",
        tested_by=("ln-has-learnable-affine",)),
    SeedSentence(
        S, "Layer Normalization能够减少训练过程中的梯度爆炸或消失问题,从而提高模型的稳定性和训练效率。",
        "LayerNorm reduces exploding or vanishing gradients in training, improving stability and efficiency.",
        why_not="needs training and gradients through depth; ln-gradients and residual-placement measure those"),
    SeedSentence(
        S, "尤其是在RNN和Transformer等序列模型中,LN所实现的稳定数据分布有助于模型层与层之间的信息流更加平滑。",
        "Especially in RNNs and Transformers, LN's stable distributions smooth the flow of information between "
        "layers.",
        why_not="'smoother information flow' is not defined well enough to measure, and this study has no "
                "sequence model (residual-placement trains Transformers)"),
    SeedSentence(
        S, "与Batch Normalization不同,Layer Normalization不依赖于mini-batch,而是对每一个样本独立进行归一化,"
           "这使得它适用于各种数据规模,包括小批量和单个样本。",
        "Unlike BN, LayerNorm does not depend on the mini-batch: it normalizes each sample independently, so it "
        "works at any batch size, including a single sample.",
        tested_by=("ln-independent-of-batch", "bn-depends-on-batch", "single-sample-mean-0", "single-sample-var-1")),
    SeedSentence(
        S, "可见右下角子图,LN之后,单条样本内部已经拉成正态分布了。",
        "As the bottom-right panel shows, after LN a single sample has been pulled into a normal distribution.",
        tested_by=("ln-makes-rows-normal", "batch-sample-var-1", "seed-check-var-1")),
    SeedSentence(
        S, "BN和LN都是缓解深度学习模型梯度消失或者梯度爆炸重要技巧",
        "BN and LN are both important techniques against vanishing or exploding gradients.",
        why_not="needs training of deep models; deep-bn and ln-gradients measure gradients"),
    SeedSentence(
        S, "实际建模过程中我们也可以通过对比加入BN或者LN前后的模型表现来调整最终的模型架构。",
        "In practice one can compare model performance with and without BN or LN to choose the architecture.",
        why_not="advice on method, not a claim about BN or LN"),
    SeedSentence(
        S, "在选择BN或者LN的时候,我们需要想清楚到底单一维度的正态分布对当前任务来说更有意义还是说单一样本内部数值的正态分布更有意义。",
        "Choosing BN or LN means deciding whether a standardized distribution per dimension (BN) or within a "
        "single sample (LN) matters more for the task.",
        tested_by=("bn-equalizes-features", "ln-keeps-feature-spread", "batch-sample-var-1")),
)
