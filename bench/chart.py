"""bench/results/bench.png from bench/results/results.json: each figure of
umqtt_full as a ratio against its anchor (umqtt.simple for the client,
mosquitto and amqtt for the broker), log scale, 1× marked. Runs in the bench
venv (bench/.scratch/venv, which has matplotlib).

usage: python chart.py results.json out.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _ratio_axis(ax):
    from matplotlib.ticker import FuncFormatter
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: ("%g×" % v)))


def _label(ax, bars, vals):
    for b, v in zip(bars, vals):
        if v:
            ax.text(b.get_width() * 1.08, b.get_y() + b.get_height() / 2,
                    "%.2f×" % v if v < 10 else "%.0f×" % v, va="center", fontsize=8)


def main(src, out):
    raw = json.load(open(src))
    client = raw.get("client", {}).get("ratios", {})
    broker = raw.get("broker", {}).get("ratios", {})
    panels = (1 if client else 0) + (1 if broker else 0)
    if not panels:
        sys.exit("chart: nothing to draw")
    nb = len(next(iter(broker.values()))) if broker else 0
    heights = ([max(2.0, 0.45 * len(client))] if client else []) + ([max(3.0, 0.5 * nb)] if broker else [])
    fig, axes = plt.subplots(panels, 1, figsize=(9, sum(heights) + 1.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    axes = [a[0] for a in axes]
    i = 0
    if client:
        ax = axes[i]
        i += 1
        labels = list(client)[::-1]
        vals = [client[k] for k in labels]
        bars = ax.barh(range(len(labels)), vals, color="#3b7dd8")
        _label(ax, bars, vals)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=9)
        ax.set_xscale("log")
        ax.axvline(1, color="k", lw=1)
        ax.set_xlim(min(vals + [1]) / 3, max(vals + [1]) * 8)
        _ratio_axis(ax)
        ax.set_title("Client: umqtt_full ÷ umqtt.simple (rates; > 1× is faster)", fontsize=10)
    if broker:
        ax = axes[i]
        systems = list(broker)
        labels = list(broker[systems[0]])[::-1]
        h = 0.8 / len(systems)
        colors = ("#d8733b", "#5aa05a", "#999999")
        allv = [1.0]
        for k, w in enumerate(systems):
            vals = [broker[w].get(lb) or 0 for lb in labels]
            allv += [v for v in vals if v]
            bars = ax.barh([j + (k - (len(systems) - 1) / 2) * h for j in range(len(labels))], vals,
                           height=h, color=colors[k % len(colors)], label="÷ " + w)
            _label(ax, bars, vals)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=9)
        ax.set_xscale("log")
        ax.axvline(1, color="k", lw=1)
        ax.set_xlim(min(allv) / 3, max(allv) * 8)
        _ratio_axis(ax)
        ax.legend(fontsize=8, loc="lower right")
        heap = raw.get("broker", {}).get("heap") or "128K"
        ax.set_title("Broker (umqtt_full at -X heapsize=%s): delivered msg/s, umqtt_full ÷ mosquitto, "
                     "÷ amqtt" % heap, fontsize=10)
    fig.suptitle("make bench — %s (%s)" % (raw.get("broker", raw.get("client", {})).get("when", ""),
                                           raw.get("machine", "")), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
