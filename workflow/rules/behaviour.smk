# The behaviour probe: judges trained on labelled answers (where a judge is trained); for every
# run, sampled answers to the evaluation questions and their judged stance, one file per snapshot
# and judge. One job per run generates and one judges (libraries, models and judges load once per
# run); where every judge is a trained stance classifier, the generate job judges too. Every judge
# of `judge.compare` judges every run, so conclusions can be checked per judge.


rule train_judge:
    input:
        train=f"{R}/data/judge/train.jsonl",
        test=f"{R}/data/judge/test.jsonl",
        encoder=encoder_input,
    output:
        model=directory(f"{R}/judge/{{judge}}"),
    params:
        settings=lambda w: as_json({k: v for k, v in judge_settings(w.judge).items() if k != "kind"}),
        # only the judge that labels the answers must reach it; compared judges may be weaker
        min_accuracy=lambda w: config["judge"].get("min_accuracy", 0.0) if w.judge == JUDGE else 0.0,
    log:
        f"{R}/logs/judge/{{judge}}.log",
    benchmark:
        f"{R}/benchmarks/judge/{{judge}}.tsv"
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift train-judge --name {wildcards.judge:q} --train {input.train:q} --test {input.test:q} "
        "--settings {params.settings:q} --output {output.model:q} --min-accuracy {params.min_accuracy:q} > {log:q} 2>&1"


rule generate:
    input:
        unpack(lambda w: JUDGE_MODELS if LOCAL_JUDGING else {}),
        snapshots=[f"{R}/{{model}}/{{run}}/snapshots/{k}" for k in SNAPSHOTS],
        adapter_base=adapter_base,
        prompts=f"{R}/data/eval_prompts.jsonl",
    output:
        generations=[f"{R}/{{model}}/{{run}}/behaviour/{k}/generations.jsonl" for k in SNAPSHOTS],
        # trained stance classifiers judge in the same process (a second of work per run)
        stances=RUN_STANCES if LOCAL_JUDGING else [],
    params:
        settings=as_json(config["behaviour"]),
        tags=run_tags,
        seed=config["seed"],
        judges=lambda w, input: f"--judges {shlex.quote(judge_specs(input))} --stances" if LOCAL_JUDGING else "",
    threads: job_threads("probe")
    resources:
        **job_resources("probe"),
    log:
        f"{R}/logs/{{model}}/{{run}}/behaviour/generate.log",
    benchmark:
        f"{R}/benchmarks/{{model}}/{{run}}/behaviour/generate.tsv"
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift generate --model {input.snapshots:q} --prompts {input.prompts:q} --output {output.generations:q} "
        "--settings {params.settings:q} --tags {params.tags:q} --seed {params.seed:q} "
        "--threads {threads:q} {params.judges} {output.stances:q} > {log:q} 2>&1"


if not LOCAL_JUDGING:

    rule judge:
        input:
            unpack(lambda w: JUDGE_MODELS),
            generations=rules.generate.output.generations,
        output:
            stances=RUN_STANCES,
        params:
            judges=lambda w, input: judge_specs(input),
        threads: job_threads("judge")
        resources:
            **job_resources("judge"),
        log:
            f"{R}/logs/{{model}}/{{run}}/behaviour/judge.log",
        benchmark:
            f"{R}/benchmarks/{{model}}/{{run}}/behaviour/judge.tsv"
        conda:
            "../../envs/probe.yaml"
        shell:
            "valuedrift judge --generations {input.generations:q} --judges {params.judges:q} "
            "--output {output.stances:q} > {log:q} 2>&1"
