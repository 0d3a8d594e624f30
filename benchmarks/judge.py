"""Answers judged per second: a local LLM judge in batches against one answer at a time, and the
trained stance classifier, on the miniature world's labelled answers.

    python benchmarks/judge.py [--model qwen3-0.6b|tiny] [--answers 64] [--batch-size 16] [--repeats 3]

The LLM judge is `valuedrift.behaviour.judges.llm.LocalLLMJudge` (prompts sorted by length and
batched with left padding; one forward pass per batch reads the three label tokens' probabilities)
on a randomly initialized model saved to a temporary folder, since its speed does not depend on
its weights. The stance classifier is trained on 3000 answers (TF-IDF, logistic regression) and
then times its predictions on 20 000. Prints medians over the repeats; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time

import shapes


def rate(fn, n: int, repeats: int) -> dict:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - t0))
    return {"answers_per_s_median": round(statistics.median(rates), 1), "runs": [round(r, 1) for r in rates]}


def llm_judge(args, rows) -> dict:
    from valuedrift.behaviour.judges.llm import LocalLLMJudge

    tokenizer = shapes.world_tokenizer()
    questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
    out = {"model": args.model, "answers": len(rows), "dtype": args.dtype, "threads": args.threads}
    with tempfile.TemporaryDirectory() as folder:
        shapes.build(args.model, tokenizer, args.dtype).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        for batch_size in (1, args.batch_size):
            judge = LocalLLMJudge.from_settings("benchmark", {"model": folder, "batch_size": batch_size,
                                                              "dtype": args.dtype})
            out[f"batch_{batch_size}"] = rate(lambda: judge.predict_proba(questions, answers), len(rows), args.repeats)
    out["ratio_of_medians"] = round(out[f"batch_{args.batch_size}"]["answers_per_s_median"]
                                    / out["batch_1"]["answers_per_s_median"], 1)
    return out


def stance_classifier(world, repeats: int) -> dict:
    from valuedrift.behaviour.judges.stance_classifier import ClassifierSettings, Featurizer, build_pipeline

    train = list(world.judge_rows("train", 3000, 0.3))
    test = [r["answer"] for r in world.judge_rows("test", 20000, 0.3)]
    featurize = Featurizer(ClassifierSettings())
    pipeline = build_pipeline(ClassifierSettings()).fit(featurize([r["answer"] for r in train]),
                                                        [r["stance"] for r in train])
    return {"answers": len(test), **rate(lambda: pipeline.predict_proba(featurize(test)), len(test), repeats)}


def main() -> None:
    import torch

    from valuedrift.world.datasets import World

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen3-0.6b", choices=sorted(shapes.SHAPES))
    parser.add_argument("--answers", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    world = World(0, 5, 2)
    rows = list(world.judge_rows("test", args.answers, 0.3))
    figures = {"local_llm": llm_judge(args, rows), "stance_classifier": stance_classifier(world, args.repeats),
               "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
