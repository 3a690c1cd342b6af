"""The compensation table from results.json files: one row per job (method, bits, compensation) with top-1,
agreement and KL to float, the maps kept (ERQ: the layers it edited), parameters and MACs per image added, and the
stage's seconds.

    python experiments/compensation/table.py multirun/compensation_w4a4 ... > experiments/compensation/table.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def row(path: Path) -> dict:
    d = json.loads(path.read_text())
    cfg, comp = d["config"], d.get("compensation") or {}
    name = cfg["compensate"]["name"]
    label = name if name == "none" else f"{name} ({comp.get('compat', cfg['compensate']['compat'])})"
    return {"model": d["model"], "method": f"{d['quantizer']} ({d['compat']})", "bits": f"W{d['bits_w']}A{d['bits_a']}",
            "compensation": label, "top-1": f"{d['top1']:.2f}", "agreement": f"{d['agreement']:.2f}",
            "KL": f"{d['kl_fp32']:.4f}",
            "kept": (f"{len(comp['layers'])} layers edited" if "layers" in comp   # ERQ edits weights, adds no map
                     else f"{comp['kept']}/{len(comp['blocks'])}" if comp else "—"),
            "R^2 per block": " ".join(f"{b['r2']:.3f}" for b in comp.get("blocks", [])) or "—",
            "params added": comp.get("added_params", 0), "MACs/image added": comp.get("added_macs_per_image", 0),
            "comp s": comp.get("seconds", 0), "calib s": round(d["calib_seconds"], 1)}


def main(folders: list[str]) -> None:
    rows = sorted((row(p) for f in folders for p in Path(f).glob("*/results.json")),
                  key=lambda r: (r["model"], r["bits"], r["method"], r["compensation"]))
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="sweep folders holding <job>/results.json")
    main(parser.parse_args().folders)
