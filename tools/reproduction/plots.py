"""``curves.png``: the kNN monitor top-1 and loss / ln(K+1) per pretraining epoch, one line per row: the
mean over seeds, the band their min-max or (``--band std``) ± one std.  Needs matplotlib (``pip install -r
requirements-analysis.txt``); without it the table is still written, with a notice."""
import os
import statistics

from torchlight.io import atomic_write

def series(runs, key):
    """(epochs, per-seed value lists aligned on the epochs) of a curve key."""
    per_seed = [{r_['epoch']: r_[key] for r_ in r.get('curve', []) if key in r_} for r in runs]
    epochs = sorted({e for s in per_seed for e in s})
    return epochs, [[s[e] for s in per_seed if e in s] for e in epochs]


def plot_curves(groups, path, plan=None, band='minmax'):
    """PNG of the kNN monitor and loss / ln(K+1) per epoch of ``groups`` ({row: [results]}); False (with a
    notice) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        print(f'Notice: matplotlib is not installed (pip install -r requirements-analysis.txt): {path} not '
              'written; the table is.')
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = [('knn_top1', 'kNN top-1 during pretraining (%)', 100), ('loss_over_uniform', 'InfoNCE / ln(K+1)', 1)]
    for ax, (key, title, scale) in zip(axes, panels):
        for name, runs in groups.items():
            epochs, values = series(runs, key)
            if not epochs:
                continue
            mean = [scale * statistics.mean(v) for v in values]
            if band == 'std':
                spread = [scale * (statistics.stdev(v) if len(v) > 1 else 0.0) for v in values]
                low, high = [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)]
            else:
                low, high = [scale * min(v) for v in values], [scale * max(v) for v in values]
            line, = ax.plot(epochs, mean, marker='.', label=f'{name} (n={len(runs)})')
            ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        if key == 'knn_top1' and plan:
            for ref, value in list(plan.floor.items()) + ([('chance', plan.chance)] if plan.chance is not None else []):
                ax.axhline(value, color='gray', linestyle='--', linewidth=1)
                ax.annotate(ref if ref == 'chance' else f'{ref} (floor)', (0, value), fontsize=8, color='gray',
                            xycoords=('axes fraction', 'data'), va='bottom')
        if key == 'loss_over_uniform':
            ax.axhline(1.0, color='gray', linestyle=':', linewidth=1)
        ax.set_xlabel('epoch')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes), key=lambda hl: len(hl[0]))
    if handles:                                    # one legend under both panels, clear of the curves and floors
        fig.legend(handles, labels, loc='lower center', ncol=min(len(handles), 4), fontsize=8, frameon=False)
    band_name = 'min-max over seeds' if band != 'std' else '± 1 std over seeds'
    fig.suptitle(f"{plan.name if plan else 'results'}: mean over seeds, band {band_name}")
    legend_rows = -(-len(handles) // 4)
    fig.tight_layout(rect=(0, 0.05 * legend_rows, 1, 1))
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, dpi=110, format='png'))
    plt.close(fig)
    return True


