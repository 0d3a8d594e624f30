# Data preparation: the miniature world's datasets (known stance mixtures), hub datasets
# normalized into the same schemas, the V-PRISM evaluation questions and synthetic value-gap pairs.

# what every dataset of the world is drawn from: its seed and question split
WORLD = as_json({"seed": config["seed"], **config["world"]})


rule prepare_pretrain_corpus:
    output:
        f"{R}/data/pretrain.jsonl",
    params:
        world=WORLD,
        settings=as_json(config["world"]["pretrain_corpus"]),
    log:
        f"{R}/logs/data/pretrain.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift prepare-data --kind pretrain --world {params.world:q} "
        "--settings {params.settings:q} --output {output:q} > {log:q} 2>&1"


rule prepare_sft_data:
    output:
        f"{R}/data/sft/{{sft_data}}.jsonl",
    params:
        world=WORLD,
        settings=lambda w: as_json(config["sft_datasets"][w.sft_data]),
    log:
        f"{R}/logs/data/sft/{{sft_data}}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift prepare-data --kind sft --name {wildcards.sft_data:q} --world {params.world:q} "
        "--settings {params.settings:q} --output {output:q} > {log:q} 2>&1"


rule prepare_preference_data:
    input:
        pairs=synthetic_pairs_input,
        source=derived_source_input,
    output:
        f"{R}/data/preference/{{pref_data}}.jsonl",
    params:
        world=WORLD,
        settings=lambda w: as_json(config["preference_datasets"][w.pref_data]),
        pairs=lambda w, input: f"--pairs {shlex.quote(input.pairs[0])}" if input.pairs else "",
        source=lambda w, input: f"--source {shlex.quote(input.source[0])}" if input.source else "",
    log:
        f"{R}/logs/data/preference/{{pref_data}}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift prepare-data --kind preference --name {wildcards.pref_data:q} --world {params.world:q} "
        "--settings {params.settings:q} {params.pairs} {params.source} --output {output:q} > {log:q} 2>&1"


rule prepare_judge_data:
    output:
        f"{R}/data/judge/{{split}}.jsonl",
    wildcard_constraints:
        split="train|test",
    params:
        world=WORLD,
        settings=as_json(config["world"]["judge_data"]),
    log:
        f"{R}/logs/data/judge/{{split}}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift prepare-data --kind judge-{wildcards.split:q} --world {params.world:q} "
        "--settings {params.settings:q} --output {output:q} > {log:q} 2>&1"


rule prepare_value_questions:
    output:
        f"{R}/data/value_questions.jsonl",
    params:
        world=WORLD,
    log:
        f"{R}/logs/data/value_questions.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift prepare-data --kind value-questions --world {params.world:q} --output {output:q} > {log:q} 2>&1"


if config["eval_prompts"]["source"] == "miniature":

    rule prepare_eval_prompts:
        localrule: True
        output:
            f"{R}/data/eval_prompts.jsonl",
        params:
            world=WORLD,
        log:
            f"{R}/logs/data/eval_prompts.log",
        conda:
            "../../envs/probe.yaml"
        shell:
            "valuedrift prepare-data --kind eval-prompts --world {params.world:q} --output {output:q} > {log:q} 2>&1"

else:

    rule prepare_prism_prompts:
        localrule: True
        output:
            f"{R}/data/prism_prompts.jsonl",
        params:
            world=WORLD,
            settings=as_json(config["eval_prompts"]["vprism"]["prism"]),
        log:
            f"{R}/logs/data/prism_prompts.log",
        conda:
            "../../envs/probe.yaml"
        shell:
            "valuedrift prepare-data --kind prism-prompts --world {params.world:q} "
            "--settings {params.settings:q} --output {output:q} > {log:q} 2>&1"

    rule build_vprism:
        input:
            prompts=rules.prepare_prism_prompts.output[0],
        output:
            prompts=f"{R}/data/eval_prompts.jsonl",
            heldout=f"{R}/data/vprism_heldout.jsonl",
            topics=f"{R}/data/vprism_topics.json",
        params:
            settings=as_json({"seed": config["seed"], **config["eval_prompts"]["vprism"],
                              **({"rephraser": api_spec("eval_prompts.vprism.rephraser")}
                                 if config["eval_prompts"]["vprism"].get("rephraser") else {})}),
        threads: job_threads("probe")
        resources:
            **job_resources("probe"),
        log:
            f"{R}/logs/data/build_vprism.log",
        benchmark:
            f"{R}/benchmarks/data/build_vprism.tsv"
        conda:
            "../../envs/probe.yaml"
        shell:
            "valuedrift build-vprism --prompts {input.prompts:q} --settings {params.settings:q} "
            "--output {output.prompts:q} --heldout {output.heldout:q} --topics {output.topics:q} > {log:q} 2>&1"


if "value_gap_builder" in config:

    rule build_value_gap:
        input:
            unpack(lambda w: judge_inputs(JUDGE)),
            questions=value_questions_input,
            eval_prompts=f"{R}/data/eval_prompts.jsonl",
        output:
            f"{R}/data/value_gap_pairs.jsonl",
        params:
            generator=as_json(api_spec("value_gap_builder.generator")),
            judge=judge_args(JUDGE),
            settings=as_json({k: v for k, v in config["value_gap_builder"].items()
                              if k not in ("generator", "questions")}),
        threads: job_threads("probe")
        resources:
            **job_resources("probe"),
        log:
            f"{R}/logs/data/build_value_gap.log",
        benchmark:
            f"{R}/benchmarks/data/build_value_gap.tsv"
        conda:
            "../../envs/probe.yaml"
        shell:
            "valuedrift build-value-gap --questions {input.questions:q} --eval-prompts {input.eval_prompts:q} "
            "--generator {params.generator:q} {params.judge} --settings {params.settings:q} "
            "--output {output:q} > {log:q} 2>&1"
