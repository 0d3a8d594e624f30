"""`valuedrift build-vprism`: the V-PRISM evaluation questions, built from PRISM's opening prompts.

The steps, as in the Value Drifts study (11 topics x 50 questions there):
1. keep value-laden prompts: PRISM's "values guided" and "controversy guided" conversations,
   which its participants opened on a value or a controversial topic;
2. questions stay as written; statements are rephrased into questions by an LLM (`rephraser`;
   without one they are dropped, as a statement cannot be answered with a stance);
3. embed every question (`embedder`: a sentence encoder's hub id or folder, or `lsa` offline);
4. cluster the embeddings with k-means into `clusters` groups and keep the `topics` largest;
5. name each topic by its most distinctive words (class-based TF-IDF over the clusters);
6. sample `per_topic` questions per topic, seeded.
Each step is deterministic for a given seed and input, and the rephrasing calls are cached by the
LLM client, so a rebuild costs nothing. Questions of value-laden prompts that are not sampled go
to the held-out file: value questions disjoint from the evaluation set, for the synthetic
value-gap builder.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

REPHRASE = ("Rewrite the following statement as one neutral yes/no question that asks for the reader's "
            "opinion on the same issue. Reply with the question only.\n\nStatement: {text}")


@dataclass(frozen=True)
class VPrismSettings:
    prism: dict = field(default_factory=dict)   # the hub source of PRISM's conversations (read by prepare-data)
    conversation_types: tuple[str, ...] = ("values guided", "controversy guided")
    topics: int = 11
    per_topic: int = 50
    clusters: int | None = None                 # k-means clusters (default: topics)
    embedder: str = "lsa"                       # lsa (offline) or a sentence encoder's hub id / folder
    rephraser: dict | None = None               # an LLM (kind, model, ...) or None
    min_words: int = 4
    seed: int = 0

    def __post_init__(self):
        # a JSON list arrives as a list: keep the declared tuple
        object.__setattr__(self, "conversation_types", tuple(self.conversation_types))


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "build-vprism", __doc__)
    parser.add_argument("--prompts", required=True, help="PRISM opening prompts (JSONL from prepare-data --kind prism-prompts)")
    parser.add_argument("--settings", default="{}", help="JSON: VPrismSettings fields")
    parser.add_argument("--output", required=True, help="evaluation prompts JSONL (question_id, topic, question)")
    parser.add_argument("--heldout", required=True, help="value questions not sampled (JSONL, same schema)")
    parser.add_argument("--topics", required=True, help="JSON summary of the topics (name, size, top words)")
    return parser


def is_question(text: str) -> bool:
    return text.rstrip().endswith("?")


def value_questions(rows: list[dict], settings: VPrismSettings) -> list[dict]:
    """Value-laden prompts as questions: rephrased where needed, short ones and duplicates dropped."""
    rows = [r for r in rows if r["conversation_type"] in settings.conversation_types]
    statements = [r for r in rows if not is_question(r["text"])]
    rephrased = {}
    if statements and settings.rephraser:
        from valuedrift.llm import chat_model

        prompts = [[{"role": "user", "content": REPHRASE.format(text=r["text"])}] for r in statements]
        answers = chat_model(settings.rephraser).complete(prompts, max_tokens=64, temperature=0.0)
        rephrased = {r["prompt_id"]: a.strip().splitlines()[0] if a.strip() else "" for r, a in zip(statements, answers)}
    out, seen = [], set()
    for r in rows:
        text = r["text"].strip() if is_question(r["text"]) else rephrased.get(r["prompt_id"], "")
        key = " ".join(text.lower().split())
        if is_question(text) and len(text.split()) >= settings.min_words and key not in seen:
            seen.add(key)
            out.append({"prompt_id": r["prompt_id"], "question": text})
    log.info("%d value-laden prompts (%d statements, %d rephrased) -> %d distinct questions",
             len(rows), len(statements), len(rephrased), len(out))
    return out


def topic_names(texts: list[str], labels, n_words: int = 2) -> dict[int, tuple[str, list[str]]]:
    """cluster -> (name, top words): class-based TF-IDF, one document per cluster."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    clusters = sorted(set(labels))
    docs = [" ".join(t for t, c in zip(texts, labels) if c == k) for k in clusters]
    vectorizer = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b")
    weights = vectorizer.fit_transform(docs).toarray()
    vocab = np.array(vectorizer.get_feature_names_out())
    out, used = {}, set()
    for row, k in zip(weights, clusters):
        top = list(vocab[np.argsort(-row, kind="stable")[:5]])
        name = re.sub(r"[^a-z0-9_]", "", "_".join(top[:n_words]).lower()) or f"topic{k}"
        while name in used:  # names become path components and must be unique
            name += f"_{k}"
        used.add(name)
        out[k] = (name, top)
    return out


def build(questions: list[dict], settings: VPrismSettings):
    """(evaluation rows, held-out rows, topic summary)."""
    import numpy as np
    from sklearn.cluster import KMeans

    from valuedrift.embed import embed
    from valuedrift.io import InputError

    n_clusters = settings.clusters or settings.topics
    if len(questions) < n_clusters:
        raise InputError(f"only {len(questions)} value questions for {n_clusters} clusters — lower "
                         "eval_prompts.vprism.topics or add a rephraser to keep the statements")
    texts = [q["question"] for q in questions]
    labels = KMeans(n_clusters, random_state=settings.seed, n_init=10).fit_predict(embed(texts, settings.embedder,
                                                                                          settings.seed))
    sizes = np.bincount(labels, minlength=n_clusters)
    kept = sorted(range(n_clusters), key=lambda k: (-sizes[k], k))[:settings.topics]
    names = topic_names(texts, labels)
    rng = np.random.default_rng(settings.seed)
    chosen = {k: set(rng.permutation(np.flatnonzero(labels == k))[:settings.per_topic].tolist()) for k in kept}
    evaluation, heldout = [], []
    for i, (q, k) in enumerate(zip(questions, labels)):
        row = {"topic": names[k][0], "question": q["question"], "prompt_id": q["prompt_id"]}
        (evaluation if i in chosen.get(k, ()) else heldout).append(row)
    for rows in (evaluation, heldout):
        for rank, row in enumerate(sorted(rows, key=lambda r: (r["topic"], r["prompt_id"]))):
            row["question_id"] = f"{row['topic']}/{rank:04d}"
    summary = [{"topic": names[k][0], "cluster_size": int(sizes[k]), "sampled": len(chosen[k]),
                "top_words": names[k][1]} for k in kept]
    for s in summary:
        if s["sampled"] < settings.per_topic:
            log.warning("topic %s has only %d questions (asked for %d)", s["topic"], s["sampled"], settings.per_topic)
    return evaluation, heldout, summary


def main(args: argparse.Namespace) -> None:
    from valuedrift.config import from_dict
    from valuedrift.io import read_jsonl, write_json, write_jsonl

    settings = from_dict(VPrismSettings, json.loads(args.settings))
    rows = read_jsonl(args.prompts, required=("prompt_id", "text", "conversation_type"))
    evaluation, heldout, summary = build(value_questions(rows, settings), settings)
    order = ("question_id", "topic", "question", "prompt_id")
    write_jsonl(args.heldout, ({k: r[k] for k in order} for r in heldout))
    write_json(args.topics, summary)
    write_jsonl(args.output, ({k: r[k] for k in order} for r in sorted(evaluation, key=lambda r: r["question_id"])))
    log.info("V-PRISM: %d questions in %d topics; %d held out", len(evaluation), len(summary), len(heldout))
