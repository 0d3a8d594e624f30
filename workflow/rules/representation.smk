# The representation probe: for every snapshot of every run, hidden states of every layer on one
# fixed held-out pair set, linear probes and similarity to the run's starting model.


rule prepare_probe_pairs:
    output:
        f"{R}/data/probe_pairs.jsonl",
    params:
        world=WORLD,
        settings=as_json(probe_pairs_spec(config)),
    log:
        f"{R}/logs/data/probe_pairs.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift prepare-data --kind probe-pairs --world {params.world:q} --settings {params.settings:q} "
        "--output {output:q} > {log:q} 2>&1"


rule probe_representations:
    input:
        snapshots=[f"{R}/{{model}}/{{run}}/snapshots/{k}" for k in SNAPSHOTS],
        adapter_base=adapter_base,
        pairs=rules.prepare_probe_pairs.output[0],
    output:
        f"{R}/{{model}}/{{run}}/representation/probes.csv",
    params:
        run_dir=lambda w, input: Path(input.snapshots[0]).parent.parent,
        snapshots=K,
        settings=as_json({k: v for k, v in config["representation"].items() if k in ("hidden", "probe")}),
        tags=run_tags,
        seed=config["seed"],
    threads: job_threads("probe")
    resources:
        **job_resources("probe"),
    log:
        f"{R}/logs/{{model}}/{{run}}/representation.log",
    benchmark:
        f"{R}/benchmarks/{{model}}/{{run}}/representation.tsv"
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift probe-representations --run-dir {params.run_dir:q} --snapshots {params.snapshots:q} --pairs {input.pairs:q} "
        "--settings {params.settings:q} --tags {params.tags:q} --seed {params.seed:q} --threads {threads:q} "
        "--output {output:q} > {log:q} 2>&1"


rule representation_report:
    input:
        [f"{R}/{run.path}/representation/probes.csv" for run in REPRESENTATION_RUNS],
    output:
        table=f"{R}/aggregate/representation.csv",
        summary=report(
            f"{R}/report/representation_summary.csv", caption="../report/representation.rst", category="Representations"
        ),
        by_layer=report(
            f"{R}/report/representation_auroc_by_layer.png",
            caption="../report/representation.rst",
            category="Representations",
        ),
        peak=report(
            f"{R}/report/representation_peak_change.png",
            caption="../report/representation.rst",
            category="Representations",
        ),
        cka=report(
            f"{R}/report/representation_cka.png", caption="../report/representation.rst", category="Representations"
        ),
    log:
        f"{R}/logs/representation_report.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "valuedrift representation-report {input:q} --table {output.table:q} --summary {output.summary:q} "
        "--auroc-by-layer {output.by_layer:q} --peak-change {output.peak:q} --cka {output.cka:q} > {log:q} 2>&1"
