"""Made these tiny MLflow transformers models under transformers 4.57.6 and mlflow 3.17 (kept as test
data: models logged before transformers 5 must keep exporting and serving). Run with transformers
4.57: `python make.py OUT`; OUT/expected-4.57.json holds that version's answers."""
import os, sys, json, shutil
from pathlib import Path
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import torch, transformers, mlflow
from tokenizers import BertWordPieceTokenizer
from tests.support import zoo
out = Path(sys.argv[1]); shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
work = Path("/tmp/t457/work"); shutil.rmtree(work, ignore_errors=True); work.mkdir()
# WordPiece vocab trained on the zoo corpus
wp = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
wp.train_from_iterator(zoo._corpus() + ["Florida has nice beaches", "Abraham Lincoln cut down a cherry tree", "Angela Merkel visited Paris"], vocab_size=400, min_frequency=1, show_progress=False)
wp.save_model(str(work))
tok = transformers.BertTokenizerFast(vocab_file=str(work / "vocab.txt"), do_lower_case=False, model_max_length=128)
labels = zoo.TASK_LABELS["token-classification"]
config = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=37, max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    initializer_range=0.5, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={v: i for i, v in enumerate(labels)},
    pad_token_id=tok.pad_token_id)
torch.manual_seed(1)
model = transformers.BertForTokenClassification(config).eval()
pipe = transformers.pipeline("token-classification", model=model, tokenizer=tok)
mlflow.transformers.save_model(pipe, str(out / "ner"), pip_requirements=["transformers==4.57.6", "torch==2.13.0"])
# GPT-2 over the zoo's byte-level BPE (700 tokens)
tokg = zoo.gpt2_bpe_tokenizer(work / "bpe")
cfg = transformers.GPT2Config(vocab_size=len(tokg), n_positions=64, n_embd=32, n_layer=2, n_head=2, initializer_range=0.5,
    bos_token_id=tokg.bos_token_id, eos_token_id=tokg.eos_token_id, pad_token_id=tokg.pad_token_id)
torch.manual_seed(1)
lm = transformers.GPT2LMHeadModel(cfg).eval()
pipe = transformers.pipeline("text-generation", model=lm, tokenizer=tokg)
mlflow.transformers.save_model(pipe, str(out / "gpt2"), pip_requirements=["transformers==4.57.6", "torch==2.13.0"])
# the answers under 4.57, for the test to compare with after the upgrade
ner = transformers.pipeline("token-classification", model=str(out / "ner" / "model"), tokenizer=str(out / "ner" / "components" / "tokenizer"))
expected = {
  "ner": [ner(t, aggregation_strategy="simple") for t in ["Angela Merkel visited Paris", "Abraham Lincoln cut down a cherry tree"]],
}
gen = transformers.pipeline("text-generation", model=str(out / "gpt2" / "model"), tokenizer=str(out / "gpt2" / "components" / "tokenizer"))
expected["gpt2"] = [gen(p, do_sample=False, max_new_tokens=8)[0]["generated_text"] for p in ["Angela Merkel works for", "They cut down a cherry tree"]]
def clean(x):
    if isinstance(x, dict): return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list): return [clean(v) for v in x]
    if hasattr(x, "item"): return x.item()
    return x
(out / "expected-4.57.json").write_text(json.dumps(clean(expected), indent=1))
print(json.dumps(clean(expected))[:600])
