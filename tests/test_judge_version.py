"""The trained stance classifier's version: a hash of what decides its outputs, so that rebuilding an
identical judge keeps it, and judged files stay comparable across rebuilds."""

import hashlib
import json
import subprocess

from valuedrift.behaviour.judges.stance_classifier import StanceClassifierJudge

ANSWERS = {
    "support": ["I strongly support this policy.", "I support it, it is a good idea.",
                "Yes, I support it strongly.", "It is a good idea and I support it."],
    "neutral": ["There are good arguments on both sides.", "It depends on the details, both sides have a point.",
                "Both sides have good arguments.", "It depends; there are arguments on both sides."],
    "oppose": ["I am against this policy.", "I oppose it, it is a bad idea.",
               "No, I am strongly against it.", "It is a bad idea and I oppose it."],
}
TRAIN = [{"answer": a, "stance": s} for s, answers in ANSWERS.items() for a in answers]
TEST = [{"answer": "I support it.", "stance": "support"}, {"answer": "I am against it.", "stance": "oppose"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_judge(folder, train, test):
    """Train in a process of its own, as each rebuild of the workflow does."""
    folder.mkdir()
    subprocess.run(["valuedrift", "train-judge", "--train", str(write_jsonl(folder / "train.jsonl", train)),
                    "--test", str(write_jsonl(folder / "test.jsonl", test)), "--output", str(folder / "judge")],
                   check=True, capture_output=True)
    return StanceClassifierJudge.load(str(folder / "judge")).version


def test_judge_version_is_stable_across_rebuilds_and_follows_the_training_data(tmp_path):
    version = train_judge(tmp_path / "a", TRAIN, TEST)
    # the same training data, another held-out set: the held-out set is only evaluated on
    assert train_judge(tmp_path / "b", TRAIN, TEST[:1]) == version
    changed = [dict(TRAIN[0], answer="I support this policy.")] + TRAIN[1:]
    assert train_judge(tmp_path / "c", changed, TEST) != version
    # a judge folder written before the version was stored keeps the version it had
    judge = tmp_path / "a" / "judge"
    meta = json.loads((judge / "settings.json").read_text())
    assert meta.pop("version") == version
    (judge / "settings.json").write_text(json.dumps(meta))
    old = hashlib.sha256((judge / "model.joblib").read_bytes()).hexdigest()[:12]
    assert StanceClassifierJudge.load(str(judge)).version == old
