"""residual-placement: the claim sentences of the posts it owns, each tested by claims or marked why not.

Post 003's section on where the norm goes (Pre-LN, Post-LN, Sandwich-LN, DeepNorm, RMSNorm) and the
sentences of posts 002 and 003 saying LayerNorm rather than BatchNorm is used in NLP / transformers.
"""

from __future__ import annotations

from normlab.engine.spec import SeedSentence

POST_TITLES = {
    "003": "Transformer 模型介绍(五)—归一化 Add & Norm",
    "002": "超细节的BatchNorm/BN/LayerNorm/LN知识点",
}

_FIXED_LENGTH = ("the study trains on fixed-length windows of a character stream (every sequence has the same "
                 "length), so 'variable-length sequences' never occur here; LN vs BN at fixed length is ln-beats-bn")

SENTENCES: tuple[SeedSentence, ...] = (
    SeedSentence(
        "003", "Pre-LN 是最早采用的一种标准化方式。",
        "Pre-LN was the first normalization placement to be adopted.",
        why_not="a historical statement, not an experiment (and the record says otherwise: the original "
                "Transformer, Vaswani et al. 2017, used Post-LN; Pre-LN came later, e.g. Xiong et al. 2020)"),
    SeedSentence(
        "003", "它的优势在于能够稳定训练过程,防止深层网络中的梯度消失或梯度爆炸问题。",
        "Its advantage is that it stabilizes training and prevents vanishing or exploding gradients in deep networks.",
        tested_by=("pre-stable", "pre-grad-flat")),
    SeedSentence(
        "003", "然而,尽管Pre-LN在训练过程中较为稳定,它可能导致模型效果略逊色于Post-LN,因为其正则化效果较弱。",
        "However, although Pre-LN is more stable in training, it may make the model slightly worse than Post-LN, "
        "because its regularizing effect is weaker.",
        tested_by=("pre-slightly-worse", "pre-weaker-regularization")),
    SeedSentence(
        "003", "因此,虽然Pre-LN能提高训练稳定性,但它可能不能充分发挥网络的表达能力",
        "So although Pre-LN improves training stability, it may not bring out the network's full expressive power.",
        tested_by=("pre-stable", "pre-slightly-worse")),
    SeedSentence(
        "003", "这种方式的优势在于其正则化效果更强,有助于提高模型的表达能力和泛化性能。",
        "(Post-LN:) its advantage is a stronger regularizing effect, which helps the model's expressive power and "
        "generalization.",
        tested_by=("pre-weaker-regularization", "pre-slightly-worse")),
    SeedSentence(
        "003", "然而,Post-LN 的一个缺点是,在网络层数增加时,可能会导致训练不稳定。",
        "However, a drawback of Post-LN is that training may become unstable as the number of layers grows.",
        tested_by=("post-unstable-at-depth", "post-needs-warmup", "warmup-matters-more-for-post")),
    SeedSentence(
        "003", "这是因为深层网络中的梯度范数可能会逐渐增大,导致梯度爆炸或梯度消失",
        "This is because the gradient norm in a deep network may gradually grow, causing exploding or vanishing "
        "gradients.",
        tested_by=("post-grad-grows-toward-output",)),
    SeedSentence(
        "003", "它在每一层的残差连接前后都进行层标准化,从而充分利用两者的优势。",
        "(Sandwich-LN) normalizes both before and after every residual connection, making full use of the "
        "advantages of both.",
        why_not="'the advantages of both' names no measurable property beyond the value-explosion claims tested "
                "for the next two sentences; Sandwich-LN's divergence and loss are in the stability map figures"),
    SeedSentence(
        "003", "尽管这种方法能够防止爆炸,并稳定训练过程(相较而言的),但仍然可能导致训练不稳定,尤其是在非常深的网络中,可能会导致训练崩溃。",
        "Although this method prevents explosion and (relatively) stabilizes training, it may still be unstable, "
        "and in very deep networks training may collapse.",
        tested_by=("sandwich-stops-value-explosion", "sandwich-stream-stops-growing")),
    SeedSentence(
        "003", "Cogview(清华大学与阿里巴巴共同研究的文生图模型)就使用了Sandwich-LN,以防止出现值爆炸问题",
        "CogView used Sandwich-LN to prevent value explosion.",
        tested_by=("sandwich-stops-value-explosion", "sandwich-stream-stops-growing")),
    SeedSentence(
        "003", "随着 Transformer 模型层数的增加,Pre-LN 和 Post-LN 的传统标准化方法在非常深的网络中开始遇到训练不稳定的问题。",
        "As transformers get deeper, the traditional Pre-LN and Post-LN placements run into training instability in "
        "very deep networks.",
        tested_by=("post-unstable-at-depth", "pre-stable")),
    SeedSentence(
        "003", "从论文名字就可以看出,研究者将 Transformer 模型扩展到了1000层,这是一个非常深的网络。",
        "As the paper's title says, the researchers scaled the transformer to 1000 layers.",
        why_not="a report of what DeepNet did; 1000 layers is far beyond what two CPU cores can train"),
    SeedSentence(
        "003", "Pre-LN 之所以会让模型训练更稳定,是因为标准化的输出可以缓解子层(注意力机制和前馈神经网络)中梯度消失和梯度爆炸的问题。",
        "Pre-LN makes training more stable because the normalized output mitigates vanishing and exploding gradients "
        "in the sublayers (attention and FFN).",
        tested_by=("pre-grad-flat", "pre-stable")),
    SeedSentence(
        "003", "DeepNorm 是 Post-LN 的一种改进方法,其核心思想是在层标准化之前对残差连接进行放大操作,即在进行标准化之前,通过一个可学习的参数 α 对残差连接进行放大(α>1)。",
        "DeepNorm improves on Post-LN: before the LayerNorm it amplifies the residual connection by a learnable "
        "parameter alpha (alpha > 1).",
        tested_by=("deepnorm-alpha-amplifies",)),
    SeedSentence(
        "003", "这可以有效防止模型在训练过程中出现过大范围的参数更新,从而使训练过程更加稳定。",
        "This effectively prevents overly large parameter updates during training, so training is more stable.",
        tested_by=("deepnorm-bounds-parameter-update", "deepnorm-bounds-model-update",
                   "deepnorm-trains-where-post-fails")),
    SeedSentence(
        "003", "通过这种方式,DeepNorm能够限制参数更新的范围,避免了过大的梯度波动,从而提高了深层Transformer模型的训练稳定性。",
        "In this way DeepNorm limits the range of parameter updates, avoids large gradient swings, and so improves "
        "the training stability of deep transformers.",
        tested_by=("deepnorm-bounds-parameter-update", "deepnorm-bounds-model-update",
                   "deepnorm-trains-where-post-fails")),
    SeedSentence(
        "003", "Post-LN:每次往上放新积木时,直接叠上去。如果某块积木形状不规则(子层输出不稳定),塔容易歪倒。",
        "Post-LN: each new block is stacked straight on; if a block is irregular (unstable sublayer output) the "
        "tower easily topples.",
        why_not="an analogy; the instability it illustrates is tested by post-unstable-at-depth"),
    SeedSentence(
        "003", "DeepNorm:先在下面垫一个放大版的底座(α * 残差),再放一个缩小版的新积木(子层输出 / α)。",
        "DeepNorm: first an enlarged base (alpha * residual), then a shrunk new block (sublayer output / alpha).",
        why_not="an analogy, and not DeepNet's formula: DeepNorm does not divide the sublayer output by alpha, it "
                "scales the init of the branch weights by beta (what normlab implements; deepnorm-alpha-amplifies "
                "checks the constants)"),
    SeedSentence(
        "003", "RMSNorm 是层标准化的一种改进版本,主要用于优化神经网络的训练稳定性和收敛性。",
        "RMSNorm is an improved LayerNorm, mainly for better training stability and convergence.",
        tested_by=("rmsnorm-matches-ln",)),
    SeedSentence(
        "003", "研究者发现重新居中(即减去均值的部分)并不是必需的,因此 RMSNorm 仅保留了重新缩放的部分",
        "The researchers found re-centering (subtracting the mean) unnecessary, so RMSNorm keeps only re-scaling.",
        tested_by=("rmsnorm-matches-ln",)),
    SeedSentence(
        "003", "RMSNorm 的优势在于其计算上更加高效,因为它不需要计算均值,只需要计算输入的均方根。",
        "RMSNorm's advantage is cheaper computation: no mean, only the root mean square of the input.",
        tested_by=("rmsnorm-cheaper",)),
    SeedSentence(
        "003", "这种简化操作减少了计算开销,提升了训练效率",
        "This simplification reduces compute and improves training efficiency.",
        tested_by=("rmsnorm-cheaper",)),
    SeedSentence(
        "003", "并且在实际应用中能够降低噪声的影响。",
        "And in practice it reduces the influence of noise.",
        why_not="'noise' is not defined (input noise? gradient noise?), so there is no measurement to run"),
    SeedSentence(
        "003", "在 Transformer 模型中,归一化的关键技术是层归一化(Layer Normalization)。",
        "In the transformer, the key normalization technique is LayerNorm.",
        tested_by=("ln-beats-bn",)),
    SeedSentence(
        "003", "层标准化的优势在于它不依赖于批次大小,因此对于NLP任务中常见的变长输入序列尤其适用。",
        "LayerNorm's advantage is that it does not depend on the batch size, so it suits the variable-length input "
        "sequences common in NLP.",
        why_not=_FIXED_LENGTH),
    SeedSentence(
        "003", "相比之下,层标准化不依赖批次的大小和输入序列的长度,因此能够在处理变长文本时保持稳定性和高效性。",
        "By contrast, LayerNorm depends on neither batch size nor sequence length, so it stays stable and efficient "
        "on variable-length text.",
        why_not=_FIXED_LENGTH),
    SeedSentence(
        "003", "在NLP任务中,通常不使用实例标准化和组标准化,而是采用层标准化来保证处理变长序列的稳定性。",
        "NLP tasks usually use LayerNorm, not instance or group normalization, for stability on variable-length "
        "sequences.",
        why_not="a statement about practice; InstanceNorm and GroupNorm arms are not run here, and sequences have "
                "fixed length"),
    SeedSentence(
        "002", "3)因为 Norm 维度的差异,使得它们适用的领域也有差异,BN 更多用于 CV 领域,LN 更多用于 NLP 领域。",
        "Because they normalize over different dimensions they suit different fields: BN is used more in CV, LN more "
        "in NLP.",
        tested_by=("ln-beats-bn",)),
    SeedSentence(
        "002", "最直白的原因,还是因为用 LN 的效果更好,这个在 Transformer 论文中作者有说到。",
        "The plainest reason (transformers/BERT use LN, not BN) is that LN works better, as the Transformer paper's "
        "authors said.",
        tested_by=("ln-beats-bn",)),
    SeedSentence(
        "002", "而 NLP 中不同 batch 样本的信息关联性不大,而且由于不同的句子长度不同,强行归一化会损失不同样本间的差异信息,所以就没在 batch 维度进行归一化",
        "In NLP the samples of a batch are weakly related and sentences differ in length, so normalizing across the "
        "batch would destroy the differences between samples; hence no normalization over the batch dimension.",
        why_not="a proposed mechanism (loss of between-sample information) that no arm here isolates; whether BN is "
                "worse at all is ln-beats-bn"),
)
