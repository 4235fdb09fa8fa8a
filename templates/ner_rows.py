"""NER over a DataFrame of `id` and `content`: one row per document with its `id`, its `content`
and `ner_extracted`, the [entity_group, word] pairs of its entities, as the seed's pyfunc loader
module returned them; any other column of the DataFrame comes back as it was sent.

    splitserve export models:/my-ner/1 --template templates/ner_rows.py
    mlflow.pyfunc.load_model(bundle).predict(pd.DataFrame({"id": [1, 2], "content": ["...", "..."]}))
"""

DEFAULTS = {"aggregation_strategy": "simple"}  # entities grouped into words, as `entity_group`
EXAMPLES = [
    {"id": 1, "content": "Abraham Lincoln cut down a cherry tree"},
    {"id": 2, "content": "Florida has nice beaches"},
    {"id": 3, "content": "Elon Musk owns Tesla"},
]


def postprocess(records, results, params):
    """One row per record: its own columns (`content` for the text, other columns as sent) and
    the entities found in it."""
    entities = {result["id"]: result["entities"] for result in results}
    return [
        {
            "id": record["id"],
            "content": record.get("content", record.get("text")),
            **{k: v for k, v in record.items() if k not in ("id", "content", "text")},
            "ner_extracted": [[e.get("entity_group", e.get("entity")), e["word"]] for e in entities[record["id"]]],
        }
        for record in records
    ]
