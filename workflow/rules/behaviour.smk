# The behaviour probe: a judge trained on labelled answers; for every snapshot of every run,
# sampled answers to the evaluation questions and their judged stance.


rule train_judge:
    input:
        train=f"{R}/data/judge/train.jsonl",
        test=f"{R}/data/judge/test.jsonl",
    output:
        model=directory(f"{R}/judge/stance_classifier"),
    params:
        min_accuracy=config["judge"].get("min_accuracy", 0.0),
    log:
        f"{R}/logs/judge/stance_classifier.log",
    benchmark:
        f"{R}/benchmarks/judge/stance_classifier.tsv"
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift train-judge --train {input.train} --test {input.test} --output {output.model} "
        "--min-accuracy {params.min_accuracy} > {log} 2>&1"


rule generate:
    input:
        snapshot=f"{R}/{{model}}/{{run}}/snapshots/{{k}}/meta.json",
        prompts=f"{R}/data/eval_prompts.jsonl",
    output:
        f"{R}/{{model}}/{{run}}/behaviour/{{k}}/generations.jsonl",
    params:
        model=lambda w, input: Path(input.snapshot).parent,
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
        "valuedrift generate --model {params.model} --prompts {input.prompts} --output {output} "
        "--settings {params.settings:q} --tags {params.tags:q} --seed {params.seed} "
        "--threads {threads} > {log} 2>&1"


rule judge:
    input:
        generations=f"{R}/{{model}}/{{run}}/behaviour/{{k}}/generations.jsonl",
        judge=rules.train_judge.output.model,
    output:
        f"{R}/{{model}}/{{run}}/behaviour/{{k}}/stances.jsonl",
    params:
        name=config["judge"]["name"],
    log:
        f"{R}/logs/{{model}}/{{run}}/behaviour/{{k}}/judge.log",
    benchmark:
        f"{R}/benchmarks/{{model}}/{{run}}/behaviour/{{k}}/judge.tsv"
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift judge --generations {input.generations} --judge {params.name} "
        "--judge-model {input.judge} --output {output} > {log} 2>&1"
