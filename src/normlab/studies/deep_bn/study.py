"""The deep-bn study: one cell per arm of the 100-layer net at init (init x BN, plus the larger-batch
controls) and one per arm and learning rate of the training sweep, wiring config, model, claims and figures."""

from __future__ import annotations

from typing import ClassVar

from normlab.engine.spec import (
    Cell,
    CellContext,
    CellResult,
    Claim,
    Figure,
    KeyNumber,
    SeedSentence,
    StoredRun,
    Study,
)
from normlab.studies.deep_bn import claims, figures
from normlab.studies.deep_bn.config import Config, arms, train_arms
from normlab.studies.deep_bn.model import run_arm, run_train_arm


class DeepBn(Study):
    name = "deep-bn"
    description = ("100-layer ReLU MLP at init (std and gradient per layer, 3 inits) and a learning-rate sweep "
                   "of a 10-layer MLP, with/without BN")
    seeds_from = ("004",)
    Config = Config
    quick_overrides: ClassVar[dict] = {"seeds": 4, "depth": 40, "control_batches": (), "train_depth": 4,
                                       "train_steps": 40, "train_seeds": 3, "lrs": (0.01, 0.3, 10.0),
                                       "train_inits": ("kaiming",), "tail": 5}
    post_titles: ClassVar[dict[str, str]] = {"004": "正则化和批标准化"}
    seed_sentences: ClassVar[tuple[SeedSentence, ...]] = (
        SeedSentence("004", "可以用更大学习率,加速模型收敛",
                     "(BN) lets you use a larger learning rate and speeds up the model's convergence",
                     tested_by=("bn-larger-lr", "bn-faster")),
        SeedSentence("004", "可以不用精心设计权值初始化",
                     "(With BN) you need not design the weight initialisation carefully",
                     tested_by=("bn-std-stable", "bn-init-insensitive")),
        SeedSentence("004", "可以不用dropout或使用较小的dropout",
                     "(With BN) you can drop dropout or use a smaller dropout",
                     why_not="a claim about generalisation that needs held-out data and dropout arms with and "
                             "without BN; deep-bn judges training only (the sweep never looks at a test set), and "
                             "normlab's overfitting study has dropout but no BN arm"),
        SeedSentence("004", "可以不用L2或者使用较小的weight decay",
                     "(With BN) you can drop L2 or use a smaller weight decay",
                     why_not="as for dropout: it needs weight-decay arms with and without BN judged on held-out "
                             "data; deep-bn trains without weight decay and judges training only"),
        SeedSentence("004", "可以不用LRN(local response normalization)。",
                     "(With BN) you can do without LRN (local response normalization)",
                     why_not="LRN is a layer of convolutional nets (AlexNet); deep-bn's networks are MLPs and "
                             "normlab has no LRN arm to compare with"),
        SeedSentence("004", "通过提出Batch Normalization的论文标题,我们可以知道其是为了解决ICS问题",
                     "From the title of the paper that proposed Batch Normalization we know it was meant to solve "
                             "internal covariate shift (ICS)",
                     why_not="a statement about the paper's intent; 'internal covariate shift' has no agreed "
                             "measurement, and deep-bn measures what BN does, not why it was proposed"),
        SeedSentence("004", "下一层神经元的输出值方差与三个因素有关,(1)每一层神经元的数量;(2)输入值x的方差;(3)权重"
                            "矩阵W的方差。",
                     "The variance of the next layer's output depends on three factors: (1) the number of neurons "
                     "per layer, (2) the variance of the input x, (3) the variance of the weight matrix W",
                     why_not="recalled from the post on weight initialisation; deep-bn keeps width, input variance "
                             "and weight variance fixed per init and never varies them one at a time"),
        SeedSentence("004", "如果想要控制神经元的输出值方差为1,我们可以保证X的方差为1,若想要消掉n,那就是要W的方差为1/n。",
                     "To keep the output variance at 1, keep the variance of X at 1 and, to cancel n, make the "
                     "variance of W 1/n",
                     why_not="holds for a linear layer without activation; every deep-bn network has ReLUs (which "
                             "halve the second moment: Kaiming's 2/n, tested as plain-kaiming-stable), and no "
                             "arm uses variance 1/n"),
        SeedSentence("004", "而这里面通过增加Batch Normalization层,可以直接将每一层的输出进行归一化,从而无需精心设计权值"
                            "初始化。",
                     "Adding Batch Normalization layers normalizes every layer's output directly, so the weight "
                     "initialisation need not be designed carefully",
                     tested_by=("bn-std-stable", "bn-init-insensitive")),
        SeedSentence("004", "但是其不仅解决了这一问题,还带来了其他优点。",
                     "And it does not only solve this problem, it brings other advantages too",
                     why_not="names no advantage itself; the advantages the post lists are the sentences above"),
        SeedSentence("004", "如果我们不进行权值初始化,那么随着网络的加深,输出值会变成无穷小",
                     "If we do not initialise the weights (torch's default), the output becomes vanishingly small "
                     "as the network gets deeper",
                     tested_by=("plain-default-vanishes",)),
        SeedSentence("004", "如果我们对权值初始化的方法是将均值设置为0,方差设置为1,那么随着网络的加深,输出值会变成无穷大",
                     "If we initialise the weights with mean 0 and variance 1, the output becomes infinitely large "
                     "as the network gets deeper",
                     tested_by=("plain-normal-explodes",)),
        SeedSentence("004", "解决这一问题是使用Kaiming初始化方法",
                     "The way to solve this is Kaiming initialisation",
                     tested_by=("plain-kaiming-stable",)),
        SeedSentence("004", "通过结果可以发现,无论是否对权值进行初始化,或者怎么样的初始化方法,只要使用了BN层,网络的输出方差"
                            "就会处于一个非常稳定的值。",
                     "The results show that whether or not the weights are initialised, and whatever the init "
                     "method, as long as BN layers are used the network's output variance stays at a very "
                     "stable value",
                     tested_by=("bn-std-stable",)),
    )
    threads = 1  # tiny kernels: more threads only spin-wait on a busy machine

    def check_config(self, config: Config) -> None:
        super().check_config(config)
        if config.depth <= 2 * config.fit_skip + 2:
            raise ValueError(f"depth: expected > 2*fit_skip + 2 = {2 * config.fit_skip + 2}, got {config.depth}")
        if list(config.lrs) != sorted(config.lrs):
            raise ValueError(f"lrs: expected increasing learning rates, got {list(config.lrs)}")
        if config.tail > config.train_steps:
            raise ValueError(f"tail: expected <= train_steps = {config.train_steps}, got {config.tail}")

    def cells(self, config: Config) -> list[Cell]:
        seeds = tuple(range(config.seeds))
        cells = [Cell(arm, seeds, (("init", init), ("bn", bn), ("batch", b))) for arm, init, bn, b in arms(config)]
        train = tuple(range(config.train_seeds))
        cells += [Cell(arm, train, (("init", init), ("bn", bn), ("batch", config.train_batch), ("lr", lr)))
                  for arm, init, bn, lr in train_arms(config)]
        return cells

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        p = ctx.cell.param_dict
        if "lr" in p:
            return run_train_arm(config, p["init"], p["bn"], p["lr"], ctx.cell.seeds, ctx.progress)
        return run_arm(config, p["init"], p["bn"], p["batch"], ctx.cell.seeds, ctx.progress)

    def claims(self, run: StoredRun) -> list[Claim]:
        return claims.claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return figures.figures(run)

    def notes(self, run: StoredRun) -> str:
        return claims.notes(run)

    def key_numbers(self, run: StoredRun) -> list[KeyNumber]:
        return claims.key_numbers(run)
