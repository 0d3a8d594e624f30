# Data preparation: the miniature world's datasets, each with a known stance mixture.

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
        "--settings {params.settings:q} --output {output} > {log} 2>&1"


rule prepare_sft_data:
    output:
        f"{R}/data/sft/{{sft_data}}.jsonl",
    params:
        world=WORLD,
        settings=lambda w: as_json(config["sft_datasets"][w.sft_data]["miniature"]),
    log:
        f"{R}/logs/data/sft/{{sft_data}}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift prepare-data --kind sft --name {wildcards.sft_data} --world {params.world:q} "
        "--settings {params.settings:q} --output {output} > {log} 2>&1"


rule prepare_preference_data:
    output:
        f"{R}/data/preference/{{pref_data}}.jsonl",
    params:
        world=WORLD,
        settings=lambda w: as_json(config["preference_datasets"][w.pref_data]["miniature"]),
    log:
        f"{R}/logs/data/preference/{{pref_data}}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift prepare-data --kind preference --name {wildcards.pref_data} --world {params.world:q} "
        "--settings {params.settings:q} --output {output} > {log} 2>&1"


rule prepare_eval_prompts:
    output:
        f"{R}/data/eval_prompts.jsonl",
    params:
        world=WORLD,
    log:
        f"{R}/logs/data/eval_prompts.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift prepare-data --kind eval-prompts --world {params.world:q} --output {output} > {log} 2>&1"


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
        "valuedrift prepare-data --kind judge-{wildcards.split} --world {params.world:q} "
        "--settings {params.settings:q} --output {output} > {log} 2>&1"
