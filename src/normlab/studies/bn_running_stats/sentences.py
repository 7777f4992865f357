"""Every claim sentence of the posts' BatchNorm running-statistics passages, and the claims that test it."""

from __future__ import annotations

from normlab.engine.spec import SeedSentence

POST_TITLES = {"002": "超细节的BatchNorm/BN/LayerNorm/LN知识点", "004": "正则化和批标准化"}

# Post 002: "BN在训练和测试时的差异", "BN中的移动平均Moving Average是怎么做的?", "移动平均中Momentum参数的影响".
# Post 004: the "Batch Normalization" section's _BatchNorm parameters, update rule and BatchNorm1d walk-through,
# and GroupNorm's motivation. Quotes are the posts' own text (non-breaking spaces kept as \xa0).
SENTENCES: tuple[SeedSentence, ...] = (
    SeedSentence(
        '002',
        '对于 BN,在训练时,是对每一个 batch 的训练数据进行归一化,也即用每一批数据的均值和方差。',
        "For BN, training normalizes each batch of training data, i.e. with each batch's own mean and variance.",
        tested_by=('normalize-biased',),
    ),
    SeedSentence(
        '002',
        '而在测试时,比如进行一个样本的预测,就并没有 batch 的概念,因此,这个时候用的均值和方差是在训练过程中通过滑动平均得到的均值和方差,这个会和模型权重一起,在训练完成后一并保存下来。',
        'At test time (e.g. predicting one sample) there is no batch, so the mean and variance used are those obtained by the moving average during training, saved together with the weights when training ends.',
        tested_by=('eval-uses-running',),
    ),
    SeedSentence(
        '002',
        '对于 BN,是对每一批数据进行归一化到一个相同的分布,而每一批数据的均值和方差会有一定的差别,而不是用固定的值,这个差别实际上也能够增加模型的鲁棒性,并会在一定程度上减少过拟合。',
        "BN normalizes each batch to the same distribution; batches' means and variances differ somewhat instead of being fixed values, and this difference makes the model more robust and reduces overfitting to some extent.",
        why_not='The regularizing effect of batch-to-batch noise needs a generalization comparison (the same network with and without that noise, e.g. ghost batches vs population statistics in training); this study measures the running statistics and what they cost at evaluation, not overfitting.',
    ),
    SeedSentence(
        '002',
        '但是一批数据和全量数据的均值和方差相差太多,又无法较好地代表训练集的分布,因此,BN 一般要求将训练集完全打乱,并用一个较大的 batch 值,去缩小与全量数据的差别。',
        "But if a batch's mean and variance differ too much from the full data's, they cannot represent the training set, so BN usually requires fully shuffling the training set and a large batch, to shrink the difference from the full data (the batch-size half is tested; every arm here shuffles, so shuffling itself is not varied).",
        tested_by=('small-batch-noisier',),
    ),
    SeedSentence(
        '002',
        'moving_mean\xa0=\xa0moving_mean\xa0*\xa0momentum\xa0+\xa0batch_mean\xa0*\xa0(1\xa0-\xa0momentum)',
        'The moving average: moving_mean = moving_mean * momentum + batch_mean * (1 - momentum) (the same for the variance).',
        tested_by=('seed002-momentum-in-its-formula',),
    ),
    SeedSentence(
        '002',
        '式中的 momentum 为动量参数,在 TF/Keras 中,该值为 0.99,在 Pytorch 中,这个值为 0.9 初始值,moving_mean=0,moving_var=1,相当于标准正态分布。',
        "Here momentum is the momentum parameter: 0.99 in TF/Keras and 0.9 in PyTorch; the initial values are moving_mean=0, moving_var=1, a standard normal (Keras's 0.99 is checked as its torch equivalent 0.01; Keras itself is not installed).",
        tested_by=('seed002-momentum-in-its-formula', 'seed002-momentum-argument', 'keras-equals-torch', 'initial-running-stats'),
    ),
    SeedSentence(
        '002',
        '在实际的代码中,滑动平均的计算会以下面这种更高效的方式,但实际上是等价的',
        'In real code the moving average is computed in the more efficient form moving -= (moving - batch) * (1 - momentum), which is equivalent.',
        why_not="An algebraic identity (m*a + (1-m)*b = a - (a-b)*(1-m)): there is nothing to measure; torch's kernel is checked against the rule itself by the walk-through and layer-facts claims.",
    ),
    SeedSentence(
        '002',
        '整个训练阶段滑动平均的过程,(moving_mean, moving_var)参数实际上是从正态分布,向训练集真实分布靠拢的一个过程。',
        "Over the whole of training, the moving average moves (moving_mean, moving_var) from the standard normal toward the training set's true distribution.",
        tested_by=('running-stats-approach-truth',),
    ),
    SeedSentence(
        '002',
        '理论上,训练步数越长是会越靠近真实分布的,实际上,因为每个 batch 并不能代表整个训练集的分布,所以最后的值是在真实分布附近波动。',
        'In theory, the longer the training the closer to the true distribution; in practice, because no batch represents the whole training set, the final values fluctuate around the true distribution.',
        tested_by=('ema-error-plateaus', 'cumulative-closest-stationary'),
    ),
    SeedSentence(
        '002',
        '一个更小的 momentum 值,意味着更大的更新步长,对应着滑动平均值更快的变化,能更快地向真实值靠拢,但也意味着更大的波动性,更大的 momentum 值则相反。',
        'A smaller momentum means a larger update step and a faster-changing moving average, which approaches the true value faster but fluctuates more; a larger momentum the opposite.',
        tested_by=('larger-step-converges-faster', 'larger-step-fluctuates-more'),
    ),
    SeedSentence(
        '002',
        '训练阶段使用的是(batch_mean, batch_var),所以滑动平均并不会影响训练阶段的结果,而是影响预测阶段的效果 。',
        "Training uses (batch_mean, batch_var), so the moving average does not affect training's results, only prediction.",
        tested_by=('running-stats-not-used-in-training',),
    ),
    SeedSentence(
        '002',
        '如果训练步数很短,一个大的 momentum 值可能会导致(moving_mean, moving_var)还没有靠拢到真实分布就停止了,这样对预测阶段的影响是很大的,也会是欠拟合的一个状态。',
        'If training is very short, a large momentum may leave (moving_mean, moving_var) stopped before reaching the true distribution, which hurts prediction a lot, an underfit state.',
        tested_by=('short-training-eval-gap', 'recalibration-closes-gap'),
    ),
    SeedSentence(
        '002',
        '如果训练步数足够,一个大的 momentum 值对应小的更新步长,最后的滑动平均的值是会更接近真实值的。',
        'If training is long enough, a large momentum, with its small update step, ends with moving averages closer to the true values.',
        tested_by=('larger-step-fluctuates-more', 'long-training-shrinks-gap'),
    ),
    SeedSentence(
        '002',
        '如果 batch size 比较小,那单个 batch 的(batch_mean, batch_var)和真实分布会比较大,此时滑动平均单次更新的步长就不应过大,适用一个大的 momentum 值,反之可类比分析。',
        "If the batch size is small, a single batch's (batch_mean, batch_var) differ a lot from the true distribution, so the moving average's single update step should not be too large: use a large momentum; the converse by analogy (a large batch allows a small momentum).",
        tested_by=('small-batch-noisier', 'small-batch-large-momentum', 'large-batch-small-momentum', 'batch-size-shifts-best-momentum'),
    ),
    SeedSentence(
        '004',
        'momentum:指数加权平均估计当前mean/var',
        'momentum: the exponentially weighted average that estimates the current mean/var.',
        tested_by=('walkthrough-feature-1s', 'walkthrough-feature-2s'),
    ),
    SeedSentence(
        '004',
        'track_running_stats:是训练状态,还是测试状态',
        'track_running_stats: whether it is the training state or the test state.',
        tested_by=('track-running-stats-is-mode',),
    ),
    SeedSentence(
        '004',
        '这里的weight和bias是在训练中学习的,均值和方差在测试时,为当前的统计值,在训练时采用指数加权平均计算',
        'weight and bias are learned in training; the mean and variance at test time are the current (stored) statistics, computed in training by an exponentially weighted average:',
        tested_by=('eval-uses-running',),
    ),
    SeedSentence(
        '004',
        'running_mean = (1-momentum) * pre_running_mean + momentum * mean_t',
        'running_mean = (1-momentum) * pre_running_mean + momentum * mean_t (and the same for running_var with the batch variance var_t, which torch takes unbiased).',
        tested_by=('walkthrough-feature-1s', 'walkthrough-feature-2s', 'running-var-unbiased'),
    ),
    SeedSentence(
        '004',
        '这里计算均值和方差时,将同一批次样本的同一特征在一起计算,iteration=0时,每个样本的第一个特征值均为1,所以其均值为1,方差为0,而且因为是第一轮迭代,所以上一时刻的均值和方差默认值为0,1',
        "Mean and variance are computed over the same feature of the batch's samples; at iteration 0 every sample's first feature is 1, so its mean is 1 and variance 0, and, this being the first iteration, the previous mean and variance default to 0 and 1.",
        tested_by=('initial-running-stats', 'walkthrough-feature-1s'),
    ),
    SeedSentence(
        '004',
        '所以iteration=0时,第一个特征的均值 =(1-momentum) * 0 + momentum* 1 = 0.3',
        "So at iteration 0 the first feature's running mean = (1-momentum)*0 + momentum*1 = 0.3.",
        tested_by=('walkthrough-feature-1s',),
    ),
    SeedSentence(
        '004',
        'iteration=0时,第一个特征的方差= (1-momentum) * 1 + momentum * 0 = 0.7',
        "At iteration 0 the first feature's running variance = (1-momentum)*1 + momentum*0 = 0.7.",
        tested_by=('walkthrough-feature-1s',),
    ),
    SeedSentence(
        '004',
        '第二个特征的均值=(1-momentum) * 0 + momentum * 2 = 0.6',
        "The second feature's running mean = (1-momentum)*0 + momentum*2 = 0.6.",
        tested_by=('walkthrough-feature-2s',),
    ),
    SeedSentence(
        '004',
        '第二个特征的方差=(1-momentum) * 1 + momentum * 0 = 0.7',
        "The second feature's running variance = (1-momentum)*1 + momentum*0 = 0.7.",
        tested_by=('walkthrough-feature-2s',),
    ),
    SeedSentence(
        '004',
        '小batch样本中,BN估计的值不准',
        "With small batches BN's estimates are inaccurate (the motivation the post gives for GroupNorm; the line break inside the post's sentence is dropped here).",
        tested_by=('small-batch-noisier',),
    ),
)
