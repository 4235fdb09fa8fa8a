"""Classification with business rules: the model's labels mapped to your names (`labels.json`,
shipped beside this module), `unknown` below a `threshold`, and the record's other columns
passed through to its row.

    splitserve export models:/my-classifier/1 --template templates/rules_classification
    client.predict([{"id": "t1", "text": "I love it", "customer": 42}], params={"threshold": 0.7})
    # [{"id": "t1", "customer": 42, "label": "happy", "score": 0.91}]
"""

import json

PARAMS = {"threshold": 0.5}
EXAMPLES = [{"id": "t1", "text": "I love it", "customer": 42}, {"id": "t2", "text": "Meh.", "customer": 7}]
NAMES = {}


def load(context):
    NAMES.update(json.loads((context.directory / "labels.json").read_text()))


def postprocess(records, results, params):
    if not 0 <= params["threshold"] <= 1:
        raise ValueError(f"param 'threshold': {params['threshold']} is not in [0, 1]")
    best = {result["id"]: result["labels"][0] for result in results}
    rows = []
    for record in records:
        top = best[record["id"]]
        passed = {k: v for k, v in record.items() if k not in ("text", "content", "text_pair")}
        label = NAMES.get(top["label"], top["label"]) if top["score"] >= params["threshold"] else "unknown"
        rows.append({**passed, "label": label, "score": top["score"]})
    return rows
