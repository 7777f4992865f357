"""What a reader needs from a figure's legend, checked on the artists: every series drawn in data coordinates is
labelled, every label is in a legend of the figure, and one label has one colour in every panel."""

from __future__ import annotations

from matplotlib.colors import to_hex
from matplotlib.lines import Line2D


def _legend_texts(fig) -> set[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    return {t.get_text() for lg in legends if lg is not None for t in lg.get_texts()}


def _container_labels(ax) -> dict[int, str]:
    """An errorbar's label sits on its container; its data line and caps draw under it."""
    out = {}
    for c in ax.containers:
        for artist in c.get_children():
            if isinstance(artist, Line2D):
                out[id(artist)] = c.get_label()
    return out


def _style(ln: Line2D) -> tuple:
    return to_hex(ln.get_color()), ln.get_linestyle(), ln.get_marker()


def _is_series(ax, ln: Line2D) -> bool:
    """A data series: drawn in data coordinates (not axhline/axvline, whose transform mixes axes and data
    coordinates) with more than one point, and not an errorbar's cap."""
    cap = ln.get_linestyle() == "None" and ln.get_marker() in ("_", "|")
    return ln.get_transform() == ax.transData and len(ln.get_xdata()) > 1 and not cap


def legend_faults(fig) -> list[str]:
    faults, colours, styles = [], {}, set()
    shown = _legend_texts(fig)
    for i, ax in enumerate(fig.axes):
        owners = _container_labels(ax)
        for ln in ax.lines:
            label = owners.get(id(ln), ln.get_label())
            if label.startswith("_"):
                continue
            styles.add(_style(ln))
            colour = to_hex(ln.get_color())
            if colours.setdefault(label, colour) != colour:
                faults.append(f"panel {i}: {label!r} is {colour} here, {colours[label]} in another panel")
            if label not in shown:
                faults.append(f"panel {i}: {label!r} is in no legend")
    for i, ax in enumerate(fig.axes):
        owners = _container_labels(ax)
        for ln in ax.lines:
            unlabelled = owners.get(id(ln), ln.get_label()).startswith("_")
            # An unlabelled line drawn exactly like a labelled one is described by that one's legend entry.
            if unlabelled and _is_series(ax, ln) and _style(ln) not in styles:
                faults.append(f"panel {i} ({ax.get_title()!r}): an unlabelled series {_style(ln)}")
    return faults
