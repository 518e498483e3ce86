"""``keras-dynamic calibrate EXPORT_DIR --data val.npz``: choose and save exit thresholds."""

import json
import os

from keras_dynamic.cli.data import read_npz
from keras_dynamic.runtime.policy import KINDS

NAME = "calibrate"
HELP = (
    "Choose the early exits' thresholds on labelled validation data for an accuracy "
    "or a cost target, save them (into manifest.json, or a policy file), and print "
    "(optionally plot) the accuracy-vs-mean-cost curve they were chosen on."
)


def add_arguments(parser):
    parser.add_argument("export_dir", help="export folder (or its manifest.json)")
    parser.add_argument("--data", required=True,
                        help=".npz with the inputs ('x' or per input name) and labels 'y'")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--max-accuracy-drop", type=float,
                        help="allowed accuracy drop below the final exit (0.01 = 1 point)")
    target.add_argument("--target-mean-cost", type=float,
                        help="allowed mean MACs, a fraction of the full chain's (0, 1]")
    parser.add_argument("--kind", choices=list(KINDS), default="max_softmax",
                        help="the early exits' rule; patience: one shared patience (PABEE)")
    parser.add_argument("--confidence", type=float,
                        help="bound the accuracy drop at this one-sided confidence (e.g. 0.95)")
    parser.add_argument("--policy-out",
                        help="write a policy file here instead of into manifest.json")
    parser.add_argument("--plot", help="save the curve as a PNG here (needs matplotlib)")
    parser.add_argument("--json", dest="json_out", help="write thresholds and curve as JSON")


def plot_curve(curve, chosen, path, title):
    """Saves the accuracy-vs-cost curve with the chosen point marked, as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError(
            "--plot needs matplotlib: pip install 'keras-dynamic[plot]'."
        ) from None
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.plot(curve["mean_cost"], curve["accuracy"], marker=".", label="shared threshold")
    axes.plot([chosen["mean_cost"]], [chosen["accuracy"]], "o", color="C3",
              label="chosen policy")
    axes.set_xlabel("mean cost (fraction of the full chain's MACs)")
    axes.set_ylabel("validation accuracy")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run(args):
    from keras_dynamic.runtime import load
    from keras_dynamic.runtime.calibration import tradeoff_curve

    with load(args.export_dir) as chain:
        x, y = read_npz(args.data, chain.input_names, need_labels=True)
        policy = chain.calibrate(
            x, y, max_accuracy_drop=args.max_accuracy_drop,
            target_mean_cost=args.target_mean_cost, kind=args.kind,
            confidence=args.confidence,
        )
        result = chain.predict(x)
        total = max(chain.total_macs, 1)
        chosen = {"accuracy": float((result.labels == y).mean()),
                  "mean_cost": float(result.macs.mean() / total)}
        curve = tradeoff_curve(chain, x, y, kind=args.kind)
        # The curve's last point closes every early exit: the final exit alone.
        final_accuracy = curve["accuracy"][-1]
        written = chain.save_policy(args.policy_out)
    print(f"calibrated on {len(y)} samples of {args.data}")
    for name, rule in policy.rules.items():
        text = "answers every sample left" if name == chain.exit_names[-1] else (
            "never exits early" if rule is None else f"{rule.kind} threshold {rule.threshold:.6g}")
        print(f"  {name}: {text}")
    print(f"chosen policy: accuracy {chosen['accuracy']:.4f} (final exit alone "
          f"{final_accuracy:.4f}), mean cost {chosen['mean_cost']:.1%} of the chain's MACs")
    print(f"policy saved to {written}")
    print("accuracy vs mean cost, one threshold shared by the early exits (Pareto front):")
    step = max(1, len(curve["accuracy"]) // 12)
    shown = sorted(set(range(0, len(curve["accuracy"]), step)) | {len(curve["accuracy"]) - 1})
    for k in shown:
        threshold = curve["threshold"][k]
        print(f"  cost {curve['mean_cost'][k]:6.1%}  accuracy {curve['accuracy'][k]:.4f}"
              + ("" if threshold is None else f"  threshold {threshold:.6g}"))
    if args.plot:
        plot_curve(curve, chosen, args.plot, os.path.basename(os.fspath(chain.folder)))
        print(f"curve plotted to {args.plot}")
    if args.json_out:
        from keras_dynamic.runtime.files import atomic_write_text

        atomic_write_text(args.json_out, json.dumps({
            "policy": policy.to_dict(), "chosen": chosen, "final_accuracy": final_accuracy,
            "curve": curve}, indent=2) + "\n")
        print(f"report written to {args.json_out}")
    return 0
