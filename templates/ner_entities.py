"""NER, flat: one row per entity (`id`, `entity_group`, `word`, `start`, `end`, `score`), for
those who want a table of entities rather than a list per document. A document without
entities gives no row."""

DEFAULTS = {"aggregation_strategy": "simple"}
EXAMPLES = [
    {"id": 1, "content": "Abraham Lincoln cut down a cherry tree"},
    {"id": 2, "content": "Elon Musk owns Tesla"},
]


def postprocess(records, results, params):
    return [
        {
            "id": result["id"],
            "entity_group": entity.get("entity_group", entity.get("entity")),
            "word": entity["word"],
            "start": entity["start"],
            "end": entity["end"],
            "score": entity["score"],
        }
        for result in results
        for entity in result["entities"]
    ]
