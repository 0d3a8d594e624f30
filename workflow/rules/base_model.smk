# The miniature world's base model: tokenizer + tiny causal LM, pretrained here, offline.
# Hub models (`models.<name>.path`) skip this rule.


rule build_base_model:
    input:
        corpus=f"{R}/data/pretrain.jsonl",
    output:
        directory(f"{R}/{{model}}/base"),
    params:
        settings=lambda w: as_json(config["models"][w.model]["miniature"]),
        seed=config["seed"],
    threads: resources_of("train")["cpus"]
    resources:
        mem_mb=resources_of("train")["mem_mb"],
        runtime=resources_of("train")["runtime"],
    log:
        f"{R}/logs/{{model}}/base.log",
    benchmark:
        f"{R}/benchmarks/{{model}}/base.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "valuedrift build-base --corpus {input.corpus} --output {output} --settings {params.settings:q} "
        "--seed {params.seed} --threads {threads} > {log} 2>&1"
