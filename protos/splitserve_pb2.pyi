from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Record(_message.Message):
    __slots__ = ("id", "text", "text_pair", "question", "context", "candidate_labels", "extra", "text_field", "audio_file", "audio_samples", "sampling_rate", "messages", "token_ids", "query", "table")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXT_PAIR_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_LABELS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FILE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_RATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    text_pair: str
    question: str
    context: str
    candidate_labels: _containers.RepeatedScalarFieldContainer[str]
    extra: str
    text_field: str
    audio_file: bytes
    audio_samples: AudioSamples
    sampling_rate: int
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    query: str
    table: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., text_pair: _Optional[str] = ..., question: _Optional[str] = ..., context: _Optional[str] = ..., candidate_labels: _Optional[_Iterable[str]] = ..., extra: _Optional[str] = ..., text_field: _Optional[str] = ..., audio_file: _Optional[bytes] = ..., audio_samples: _Optional[_Union[AudioSamples, _Mapping]] = ..., sampling_rate: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., token_ids: _Optional[_Iterable[int]] = ..., query: _Optional[str] = ..., table: _Optional[str] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class AudioSamples(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "datatype", "shape", "raw")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    raw: bytes
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., raw: _Optional[bytes] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Labels(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelScore]
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("entity_group", "entity", "score", "word", "start", "end", "index")
    ENTITY_GROUP_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    entity_group: str
    entity: str
    score: float
    word: str
    start: int
    end: int
    index: int
    def __init__(self, entity_group: _Optional[str] = ..., entity: _Optional[str] = ..., score: _Optional[float] = ..., word: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class Entities(_message.Message):
    __slots__ = ("entities",)
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    def __init__(self, entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("shape", "values")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class MaskFill(_message.Message):
    __slots__ = ("score", "token", "token_str", "sequence")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_STR_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    score: float
    token: int
    token_str: str
    sequence: str
    def __init__(self, score: _Optional[float] = ..., token: _Optional[int] = ..., token_str: _Optional[str] = ..., sequence: _Optional[str] = ...) -> None: ...

class MaskCandidates(_message.Message):
    __slots__ = ("candidates",)
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[MaskFill]
    def __init__(self, candidates: _Optional[_Iterable[_Union[MaskFill, _Mapping]]] = ...) -> None: ...

class FilledMasks(_message.Message):
    __slots__ = ("masks",)
    MASKS_FIELD_NUMBER: _ClassVar[int]
    masks: _containers.RepeatedCompositeFieldContainer[MaskCandidates]
    def __init__(self, masks: _Optional[_Iterable[_Union[MaskCandidates, _Mapping]]] = ...) -> None: ...

class Answer(_message.Message):
    __slots__ = ("answer", "score", "start", "end")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    answer: str
    score: float
    start: int
    end: int
    def __init__(self, answer: _Optional[str] = ..., score: _Optional[float] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Answers(_message.Message):
    __slots__ = ("answers",)
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    answers: _containers.RepeatedCompositeFieldContainer[Answer]
    def __init__(self, answers: _Optional[_Iterable[_Union[Answer, _Mapping]]] = ...) -> None: ...

class TableAnswer(_message.Message):
    __slots__ = ("answer", "coordinates", "cells", "aggregator")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    COORDINATES_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    answer: str
    coordinates: _containers.RepeatedCompositeFieldContainer[CellCoordinate]
    cells: _containers.RepeatedScalarFieldContainer[str]
    aggregator: str
    def __init__(self, answer: _Optional[str] = ..., coordinates: _Optional[_Iterable[_Union[CellCoordinate, _Mapping]]] = ..., cells: _Optional[_Iterable[str]] = ..., aggregator: _Optional[str] = ...) -> None: ...

class CellCoordinate(_message.Message):
    __slots__ = ("row", "column")
    ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    row: int
    column: int
    def __init__(self, row: _Optional[int] = ..., column: _Optional[int] = ...) -> None: ...

class ZeroShot(_message.Message):
    __slots__ = ("sequence", "labels", "scores")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    sequence: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, sequence: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[float]] = ...) -> None: ...

class GeneratedText(_message.Message):
    __slots__ = ("generated_text", "token_ids")
    GENERATED_TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    generated_text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, generated_text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Generated(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedCompositeFieldContainer[GeneratedText]
    def __init__(self, texts: _Optional[_Iterable[_Union[GeneratedText, _Mapping]]] = ...) -> None: ...

class Transcription(_message.Message):
    __slots__ = ("text", "token_ids", "chunks")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    chunks: _containers.RepeatedCompositeFieldContainer[TextChunk]
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., chunks: _Optional[_Iterable[_Union[TextChunk, _Mapping]]] = ...) -> None: ...

class TextChunk(_message.Message):
    __slots__ = ("text", "start", "end")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    text: str
    start: float
    end: float
    def __init__(self, text: _Optional[str] = ..., start: _Optional[float] = ..., end: _Optional[float] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("id", "labels", "entities", "embedding", "filled_masks", "answers", "zero_shot", "generated", "transcription", "table_answer")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    FILLED_MASKS_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    ZERO_SHOT_FIELD_NUMBER: _ClassVar[int]
    GENERATED_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TABLE_ANSWER_FIELD_NUMBER: _ClassVar[int]
    id: str
    labels: Labels
    entities: Entities
    embedding: Embedding
    filled_masks: FilledMasks
    answers: Answers
    zero_shot: ZeroShot
    generated: Generated
    transcription: Transcription
    table_answer: TableAnswer
    def __init__(self, id: _Optional[str] = ..., labels: _Optional[_Union[Labels, _Mapping]] = ..., entities: _Optional[_Union[Entities, _Mapping]] = ..., embedding: _Optional[_Union[Embedding, _Mapping]] = ..., filled_masks: _Optional[_Union[FilledMasks, _Mapping]] = ..., answers: _Optional[_Union[Answers, _Mapping]] = ..., zero_shot: _Optional[_Union[ZeroShot, _Mapping]] = ..., generated: _Optional[_Union[Generated, _Mapping]] = ..., transcription: _Optional[_Union[Transcription, _Mapping]] = ..., table_answer: _Optional[_Union[TableAnswer, _Mapping]] = ...) -> None: ...

class TierInfoRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class TierInfo(_message.Message):
    __slots__ = ("tier", "model", "task", "fingerprint", "streams", "fingerprints", "models")
    TIER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    tier: str
    model: str
    task: str
    fingerprint: str
    streams: bool
    fingerprints: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tier: _Optional[str] = ..., model: _Optional[str] = ..., task: _Optional[str] = ..., fingerprint: _Optional[str] = ..., streams: _Optional[bool] = ..., fingerprints: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[str]] = ...) -> None: ...

class PreprocessRequest(_message.Message):
    __slots__ = ("model", "records", "params", "fingerprint")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    model: str
    records: _containers.RepeatedCompositeFieldContainer[Record]
    params: _struct_pb2.Struct
    fingerprint: str
    def __init__(self, model: _Optional[str] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class ModelParameter(_message.Message):
    __slots__ = ("bool_value", "int64_value", "double_value", "string_value")
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT64_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    bool_value: bool
    int64_value: int
    double_value: float
    string_value: str
    def __init__(self, bool_value: _Optional[bool] = ..., int64_value: _Optional[int] = ..., double_value: _Optional[float] = ..., string_value: _Optional[str] = ...) -> None: ...

class PreprocessResponse(_message.Message):
    __slots__ = ("model", "fingerprint", "model_inputs", "context", "model_parameters", "task_records", "truncated", "cache_params")
    class ModelParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ModelParameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ModelParameter, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_INPUTS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TASK_RECORDS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    CACHE_PARAMS_FIELD_NUMBER: _ClassVar[int]
    model: str
    fingerprint: str
    model_inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    context: _containers.RepeatedCompositeFieldContainer[Tensor]
    model_parameters: _containers.MessageMap[str, ModelParameter]
    task_records: _containers.RepeatedCompositeFieldContainer[Record]
    truncated: _containers.RepeatedScalarFieldContainer[str]
    cache_params: str
    def __init__(self, model: _Optional[str] = ..., fingerprint: _Optional[str] = ..., model_inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., context: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., model_parameters: _Optional[_Mapping[str, ModelParameter]] = ..., task_records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., truncated: _Optional[_Iterable[str]] = ..., cache_params: _Optional[str] = ...) -> None: ...

class PostprocessRequest(_message.Message):
    __slots__ = ("model", "fingerprint", "records", "params", "model_outputs", "context", "partial", "task_records")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    TASK_RECORDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    fingerprint: str
    records: _containers.RepeatedCompositeFieldContainer[Record]
    params: _struct_pb2.Struct
    model_outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    context: _containers.RepeatedCompositeFieldContainer[Tensor]
    partial: bool
    task_records: _containers.RepeatedCompositeFieldContainer[Record]
    def __init__(self, model: _Optional[str] = ..., fingerprint: _Optional[str] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., model_outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., context: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., partial: _Optional[bool] = ..., task_records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ...) -> None: ...

class PostprocessResponse(_message.Message):
    __slots__ = ("fingerprint", "results", "rows")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    results: _containers.RepeatedCompositeFieldContainer[Result]
    rows: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, fingerprint: _Optional[str] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ..., rows: _Optional[_Iterable[str]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "records", "params")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    model: str
    records: _containers.RepeatedCompositeFieldContainer[Record]
    params: _struct_pb2.Struct
    def __init__(self, model: _Optional[str] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("record", "id", "text", "token_ids")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    record: int
    id: str
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, record: _Optional[int] = ..., id: _Optional[str] = ..., text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class PredictStreamResponse(_message.Message):
    __slots__ = ("delta", "final")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    delta: TextDelta
    final: PredictResponse
    def __init__(self, delta: _Optional[_Union[TextDelta, _Mapping]] = ..., final: _Optional[_Union[PredictResponse, _Mapping]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "fingerprint", "results", "rows", "truncated")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    model: str
    fingerprint: str
    results: _containers.RepeatedCompositeFieldContainer[Result]
    rows: _containers.RepeatedScalarFieldContainer[str]
    truncated: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., fingerprint: _Optional[str] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ..., rows: _Optional[_Iterable[str]] = ..., truncated: _Optional[_Iterable[str]] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("model", "query", "documents", "top_n", "return_documents", "raw_scores", "params")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    RAW_SCORES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    model: str
    query: str
    documents: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    return_documents: bool
    raw_scores: bool
    params: _struct_pb2.Struct
    def __init__(self, model: _Optional[str] = ..., query: _Optional[str] = ..., documents: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ..., return_documents: _Optional[bool] = ..., raw_scores: _Optional[bool] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("model", "text_1", "text_2", "raw_scores", "params")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_1_FIELD_NUMBER: _ClassVar[int]
    TEXT_2_FIELD_NUMBER: _ClassVar[int]
    RAW_SCORES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    model: str
    text_1: _containers.RepeatedScalarFieldContainer[str]
    text_2: _containers.RepeatedScalarFieldContainer[str]
    raw_scores: bool
    params: _struct_pb2.Struct
    def __init__(self, model: _Optional[str] = ..., text_1: _Optional[_Iterable[str]] = ..., text_2: _Optional[_Iterable[str]] = ..., raw_scores: _Optional[bool] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class PairScore(_message.Message):
    __slots__ = ("index", "score", "document", "truncated")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    index: int
    score: float
    document: str
    truncated: bool
    def __init__(self, index: _Optional[int] = ..., score: _Optional[float] = ..., document: _Optional[str] = ..., truncated: _Optional[bool] = ...) -> None: ...

class Scores(_message.Message):
    __slots__ = ("model", "fingerprint", "results", "input_tokens")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    fingerprint: str
    results: _containers.RepeatedCompositeFieldContainer[PairScore]
    input_tokens: int
    def __init__(self, model: _Optional[str] = ..., fingerprint: _Optional[str] = ..., results: _Optional[_Iterable[_Union[PairScore, _Mapping]]] = ..., input_tokens: _Optional[int] = ...) -> None: ...

class TokenizeRequest(_message.Message):
    __slots__ = ("model", "inputs", "add_special_tokens", "fingerprint")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    ADD_SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    model: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    add_special_tokens: bool
    fingerprint: str
    def __init__(self, model: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., add_special_tokens: _Optional[bool] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ("id", "text", "special", "start", "stop")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    id: int
    text: str
    special: bool
    start: int
    stop: int
    def __init__(self, id: _Optional[int] = ..., text: _Optional[str] = ..., special: _Optional[bool] = ..., start: _Optional[int] = ..., stop: _Optional[int] = ...) -> None: ...

class TokenList(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[Token]
    def __init__(self, tokens: _Optional[_Iterable[_Union[Token, _Mapping]]] = ...) -> None: ...

class TokenizeResponse(_message.Message):
    __slots__ = ("model", "fingerprint", "inputs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    fingerprint: str
    inputs: _containers.RepeatedCompositeFieldContainer[TokenList]
    def __init__(self, model: _Optional[str] = ..., fingerprint: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TokenList, _Mapping]]] = ...) -> None: ...

class TokenIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DecodeRequest(_message.Message):
    __slots__ = ("model", "ids", "skip_special_tokens", "fingerprint")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SKIP_SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    model: str
    ids: _containers.RepeatedCompositeFieldContainer[TokenIds]
    skip_special_tokens: bool
    fingerprint: str
    def __init__(self, model: _Optional[str] = ..., ids: _Optional[_Iterable[_Union[TokenIds, _Mapping]]] = ..., skip_special_tokens: _Optional[bool] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class DecodeResponse(_message.Message):
    __slots__ = ("model", "fingerprint", "texts")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    fingerprint: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., fingerprint: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...
