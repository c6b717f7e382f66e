"""ct.validate on 20 two-hop prompts of the embedded organism: graph-predicted vs measured ablation
effects (Spearman), per prompt and the median. Usage: python benchmarks/validate_organism.py"""

from __future__ import annotations

import pandas as pd
import torch

import circuit_trace as ct

CITIES = [
    "Dallas",
    "Oakland",
    "Seattle",
    "Chicago",
    "Miami",
    "Houston",
    "Denver",
    "Boston",
    "Atlanta",
    "Phoenix",
    "Memphis",
    "Reno",
    "Tulsa",
    "Spokane",
    "Detroit",
    "Baltimore",
    "Omaha",
    "Boise",
    "Tampa",
    "Portland",
]


def main() -> None:
    torch.set_num_threads(1)
    model = ct.load()
    reports = []
    for city in CITIES:
        prompt = f"Fact: the capital of the state containing {city} is"
        reports.append(ct.validate(model, ct.attribute(model, prompt, progress=False)).summary)
    table = pd.concat(reports, keys=CITIES)
    print(table.to_string())
    print("\nmedian over prompts:")
    print(table.groupby("pairs").median(numeric_only=True).to_string())


if __name__ == "__main__":
    main()
