"""The regularisation sentences of post 004 (its sections on regularisation, L1/L2 and weight decay, and
dropout) and the claims that test each one, or why one cannot be tested here.

Quotes are the post's own words; where the post breaks a sentence over lines (around inline code), the
quote joins the lines. The post's Batch Normalization section belongs to other studies.
"""

from __future__ import annotations

from normlab.engine.spec import SeedSentence

POST = "004"
POST_TITLES = {POST: "正则化和批标准化"}


def _s(quote: str, english: str, *tested_by: str, why_not: str = "") -> SeedSentence:
    return SeedSentence(seed=POST, quote=quote, english=english, tested_by=tuple(tested_by), why_not=why_not)


SEED_SENTENCES: tuple[SeedSentence, ...] = (
    _s("Regularization-正则化:减小方差的策略",
       "Regularization: a strategy to reduce variance.",
       "weight_decay-reduces-variance", "dropout-reduces-variance"),
    _s("误差可分为解为:偏差,方差与噪声之和,即误差=偏差+方差+噪声之和;",
       "The error decomposes into the sum of bias, variance and noise.",
       why_not="a definition (the bias-variance decomposition); normlab measures the variance term and the "
               "noise floor but does not decompose the error"),
    _s("噪声:表达了在当前任务上任何学习算法所能达到的期望泛化误差的下界。",
       "Noise: the lower bound of the expected generalization error any learning algorithm can reach.",
       why_not="a definition; the figures draw the true line's error on the held-out points as that floor"),
    _s("其能够完美的拟合所有训练集的点,但是测试集表现非常差,这就是高方差的典型例子,正则化就是为了降低方差。",
       "A complex function fits every training point perfectly but does very badly on the test set: a typical "
       "case of high variance; regularization is there to reduce variance.",
       "none-overfits", "weight_decay-reduces-variance", "dropout-reduces-variance"),
    _s("前面我们已经知道:目标函数=代价函数+正则项",
       "Objective = cost + regularization term.",
       "weight_decay-is-l2-penalty"),
    _s("L1和L2的正则化方式就是权重值计算方式不同",
       "L1 and L2 regularization differ only in how the weights enter the penalty.",
       why_not="the post runs no L1 penalty and normlab has no L1 arm; only L2 (weight_decay) is measured"),
    _s("这里为了使得正则项的值尽可能小,所以要求权重矩阵的值也会尽可能的小,从而使得模型不会过于复杂。",
       "To keep the penalty small the weights are kept small, so the model does not become too complex.",
       "weight_decay-shrinks-weights", "weight_decay-smoother-fit"),
    _s("在pytorch中,加入L2正则项后的权重值的更新与不带正则项相比,会先对w乘以(1-λ),而0<λ<1,"
       "所以相当于对权重进行了一个缩小的操作,所以L2正则项被叫做权值衰减。",
       "In PyTorch, with the L2 term the weight update first multiplies w by (1-λ), 0<λ<1, which shrinks the "
       "weights; that is why the L2 term is called weight decay.",
       "weight_decay-step-post-formula", "weight_decay-step-sgd-formula", "weight_decay-is-l2-penalty"),
    _s("可以看到如果不使用weight decay,损失降到一个非常非常小的值,已经过拟合了,在测试集上效果并不好;",
       "Without weight decay the loss falls to a very, very small value: it has overfit and does poorly on the "
       "test set.",
       "none-overfits"),
    _s("而加了weight decay之后,损失相比之前略大一些,",
       "With weight decay the loss is a little larger than before,",
       "weight_decay-raises-train-loss"),
    _s("但是在这个例子中依然是过拟合的,",
       "but in this example it still overfits,",
       "weight_decay-still-overfits"),
    _s("不过相比之前略有缓解,",
       "though a little less than before,",
       "weight_decay-reduces-gap", "weight_decay-lowers-heldout"),
    _s("蓝色的曲线相比红色也稍微平缓一些,",
       "and the blue curve (weight decay) is a little flatter than the red one (none),",
       "weight_decay-smoother-fit"),
    _s("也就是说仅靠weight decay并不是都能显著的优化所有问题。",
       "so weight decay alone does not markedly fix every problem.",
       why_not="a statement about all problems; one toy regression cannot test it"),
    _s("功能:避免结果过度依赖某个神经元。",
       "Purpose (of dropout): keep the result from depending too much on any one neuron.",
       why_not="a mechanism: normlab does not measure how much the output depends on single units"),
    _s("通过设置参数p,确定网络中被舍弃的神经元数量,如p=0.3,有30%的神经元会失活(被舍弃)。",
       "The parameter p sets how many neurons are dropped: with p=0.3, 30% of the neurons are dropped. "
       "(normlab measures the dropped fraction at the study's p.)",
       "dropout-drops-fraction-p"),
    _s("参考文献:《Dropout:A simple way to prevent neural networks from overfitting》",
       "Reference: Srivastava et al. 2014. (Its section 7.4 finds no gain from dropout on very small training "
       "sets; normlab tests that finding as a contrast with larger sets.)",
       "dropout-no-gain-tiny", "dropout-gain-grows-with-data"),
    _s("由于训练时使用了dropout, 而测试时没有单元被舍弃,而该层的输出值需要按 dropout 比率缩小,"
       "因为这时比训练时有更多的单元被激活,需要加以平衡。",
       "Since dropout is used in training but no unit is dropped at test time, the layer's output must be "
       "scaled down by the dropout rate at test time, as more units are active than in training.",
       why_not="describes the original (non-inverted) scheme, which PyTorch does not implement; the "
               "inverted-dropout claims test what PyTorch does instead"),
    _s("比如p=0.3,那么需要将输出值乘以(1-p)=0.7才可以与训练时一致,",
       "E.g. with p=0.3 the test output must be multiplied by (1-p)=0.7 to match training.",
       why_not="the original scheme's test-time scaling; PyTorch scales in training instead (tested by "
               "inverted-dropout-scale and inverted-dropout-eval-exact)"),
    _s("实际实现时,在训练时权重均乘以[1/(1-p)],即除以(1-p)来增大权重,从而在测试时不需要再乘以(1-p)。",
       "PyTorch's implementation multiplies by 1/(1-p) in training (the post says: the weights), so nothing "
       "needs to be multiplied by (1-p) at test time.",
       "inverted-dropout-scale", "inverted-dropout-eval-exact", "inverted-dropout-train-mean"),
    _s("理论上有5000个神经元失去活性,训练的输出应该为5000,但是实际为9994(约为1万,每次运行都会变化),",
       "In theory 5000 neurons are dropped and the training output should be 5000, but it is 9994 (about "
       "10000, different on every run),",
       "inverted-dropout-train-mean", "seed-draw-typical"),
    _s("在使得部分神经元失去活性时,将权重值增加了二倍(这里是除以(1-0.5),等价于乘以2)。",
       "because when PyTorch drops some neurons it doubles the weights (divides by 1-0.5, i.e. multiplies by 2).",
       "inverted-dropout-scale"),
    _s("下面是对比使用dropout和不使用模型结果,与weight decay效果类似。",
       "Comparing the model with and without dropout: the effect is similar to weight decay's.",
       "dropout-reduces-gap", "dropout-lowers-heldout"),
    _s("dropout加在激活函数层之后,下一层网络层之前;",
       "Dropout goes after the activation and before the next layer;",
       why_not="placement advice: normlab follows it and runs no other placement"),
    _s("最后一层输出之前要看情况增加dropout,对于简单的任务可以添加,复杂的任务可以不加;",
       "whether to add dropout before the output layer depends on the task: for simple tasks yes, complex ones "
       "may go without;",
       why_not="advice across tasks of different complexity; the study has one task"),
    _s("务必使用net.eval()和net.train()区分模型测试和训练。",
       "Always use net.eval() and net.train() to separate testing from training.",
       "inverted-dropout-eval-exact", "seed-draw-typical"),
)
