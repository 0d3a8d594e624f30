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
    threads: job_threads("base")
    resources:
        **job_resources("base"),
    log:
        f"{R}/logs/{{model}}/base.log",
    benchmark:
        f"{R}/benchmarks/{{model}}/base.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "valuedrift build-base --corpus {input.corpus:q} --output {output:q} --settings {params.settings:q} "
        "--seed {params.seed:q} --threads {threads:q} > {log:q} 2>&1"
