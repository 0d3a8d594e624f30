# The behaviour probe: judges trained on labelled answers (where a judge is trained); for every
# snapshot of every run, sampled answers to the evaluation questions and their judged stance.


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
        snapshot=f"{R}/{{model}}/{{run}}/snapshots/{{k}}",
        adapter_base=adapter_base,
        prompts=f"{R}/data/eval_prompts.jsonl",
    output:
        f"{R}/{{model}}/{{run}}/behaviour/{{k}}/generations.jsonl",
    params:
        settings=as_json(config["behaviour"]),
        tags=run_tags,
        seed=config["seed"],
    threads: job_threads("probe")
    resources:
        **job_resources("probe"),
    log:
        f"{R}/logs/{{model}}/{{run}}/behaviour/{{k}}/generate.log",
    benchmark:
        f"{R}/benchmarks/{{model}}/{{run}}/behaviour/{{k}}/generate.tsv"
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift generate --model {input.snapshot:q} --prompts {input.prompts:q} --output {output:q} "
        "--settings {params.settings:q} --tags {params.tags:q} --seed {params.seed:q} "
        "--threads {threads:q} > {log:q} 2>&1"


rule judge:
    input:
        unpack(lambda w: judge_inputs(JUDGE)),
        generations=f"{R}/{{model}}/{{run}}/behaviour/{{k}}/generations.jsonl",
    output:
        f"{R}/{{model}}/{{run}}/behaviour/{{k}}/stances.jsonl",
    params:
        judge=judge_args(JUDGE),
    log:
        f"{R}/logs/{{model}}/{{run}}/behaviour/{{k}}/judge.log",
    benchmark:
        f"{R}/benchmarks/{{model}}/{{run}}/behaviour/{{k}}/judge.tsv"
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift judge --generations {input.generations:q} {params.judge} --output {output:q} > {log:q} 2>&1"
