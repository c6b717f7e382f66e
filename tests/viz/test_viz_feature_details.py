"""feature_details: Neuronpedia feature-details files, validated and written atomically."""

from __future__ import annotations

import json

import numpy as np
import pytest

from circuit_trace.viz.feature_details import (
    FeatureDetailsError,
    cantor_index,
    feature_details_from_examples,
    validate_feature_details,
    write_feature_details,
)


def feat(index, n_ex=2):
    return {
        "index": index,
        "examples_quantiles": [
            {
                "quantile_name": "Top activations",
                "examples": [
                    {"tokens": ["<bos>", " The", " cat"], "tokens_acts_list": [0.0, 0.5, 2.0 + i]} for i in range(n_ex)
                ],
            }
        ],
        "top_logits": [" dog", " mouse"],
        "bottom_logits": [" the"],
    }


def test_write_and_validate_against_schema(tmp_path, reference_schema):
    paths = write_feature_details(tmp_path / "features", [feat(cantor_index(1, 5)), feat(3)])
    assert [p.name for p in paths] == [f"{cantor_index(1, 5)}.json", "3.json"]
    sch = reference_schema("neuronpedia-feature-details-schema.json")
    jsonschema = pytest.importorskip("jsonschema")
    for p in paths:
        data = json.loads(p.read_text())
        if sch is not None:
            jsonschema.Draft7Validator(sch).validate(data)
        assert data["examples_quantiles"][0]["examples"][0]["tokens"] == ["<bos>", " The", " cat"]
    assert sorted(x.name for x in (tmp_path / "features").iterdir()) == sorted(p.name for p in paths)


def test_numpy_values_become_plain():
    d = feat(np.int64(7))
    d["examples_quantiles"][0]["examples"][0]["tokens_acts_list"] = np.array([0.0, 1.5, 2.5], dtype=np.float32)
    out = validate_feature_details(d)
    assert out["index"] == 7 and type(out["index"]) is int
    json.dumps(out)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("index"),
        lambda d: d.update(index="7"),
        lambda d: d.pop("examples_quantiles"),
        lambda d: d["examples_quantiles"][0].pop("quantile_name"),
        lambda d: d["examples_quantiles"][0]["examples"][0].update(tokens=[1, 2, 3]),
        lambda d: d["examples_quantiles"][0]["examples"][0].update(tokens_acts_list=[0.0, 1.0]),
        lambda d: d["examples_quantiles"][0]["examples"][0].update(tokens_acts_list=[0.0, float("nan"), 1.0]),
        lambda d: d.update(top_logits=[1]),
    ],
)
def test_invalid_rejected_and_nothing_written(tmp_path, mutate):
    bad = feat(9)
    mutate(bad)
    with pytest.raises(FeatureDetailsError):
        write_feature_details(tmp_path, [feat(1), bad])
    assert list(tmp_path.iterdir()) == []  # all validated before any write


def test_duplicate_index_rejected(tmp_path):
    with pytest.raises(FeatureDetailsError, match="duplicate"):
        write_feature_details(tmp_path, [feat(1), feat(1)])


def test_builder():
    d = feature_details_from_examples(4, [(["a", "b"], [0.0, 1.0])], top_logits=["x"])
    assert d == {
        "index": 4,
        "examples_quantiles": [
            {"quantile_name": "Top activations", "examples": [{"tokens": ["a", "b"], "tokens_acts_list": [0.0, 1.0]}]}
        ],
        "top_logits": ["x"],
    }
    assert cantor_index(0, 0) == 0 and cantor_index(1, 0) == 1 and cantor_index(0, 1) == 2
